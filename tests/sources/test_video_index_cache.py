"""The video indexes a process keeps are bounded by an estimate of their bytes as well as by
their count: an index of a long video (per-packet arrays, and a ``pos_of`` dict once read)
is tens of MB, so sixteen of them must not stay in every decoding process."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import media
import numpy as np
import pytest

from framepipe.sources.video.index import INDEX_CACHE, VideoIndex, build_index, load_index
from framepipe.sources.video.index_cache import DICT_ENTRY_BYTES, IndexCache, index_bytes


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("index_cache")
    return [media.h264_mp4(root / f"v{k}.mp4", num_frames=60 + 10 * k) for k in range(3)]


def _arrays(idx: VideoIndex) -> int:
    return sum(v.nbytes for v in vars(idx).values() if isinstance(v, np.ndarray))


def test_an_index_size_counts_its_arrays_and_the_dict_a_read_adds(videos: list[Path]) -> None:
    idx = build_index(videos[0])
    before = index_bytes(idx)
    assert before >= _arrays(idx) > 0
    assert idx.pos_of  # what a seeking read builds
    assert index_bytes(idx) >= before + DICT_ENTRY_BYTES * idx.num_packets


def test_the_index_cache_keeps_no_more_bytes_than_its_bound(videos: list[Path]) -> None:
    a, b, c = (build_index(v) for v in videos)
    cache = IndexCache(kept=16, max_bytes=index_bytes(b) + index_bytes(c))
    for key, idx in zip("abc", (a, b, c)):
        cache.put(key, idx)
    assert cache.keys() == ["b", "c"] and cache.nbytes() <= cache.max_bytes
    assert b.pos_of  # b grew since it was put: using it again trims the cache to the bound
    assert cache.get("b") is b
    assert cache.keys() == ["b"]
    big = IndexCache(kept=16, max_bytes=1)  # the index used last is kept, however large
    big.put("a", a)
    assert big.keys() == ["a"]


def test_the_index_cache_keeps_its_count_bound(videos: list[Path]) -> None:
    cache = IndexCache(kept=2, max_bytes=1 << 40)
    for key, v in zip("abc", videos):
        cache.put(key, build_index(v))
    assert cache.keys() == ["b", "c"]


def test_load_index_keeps_indexes_within_the_byte_bound(
    videos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = index_bytes(build_index(videos[2]))
    monkeypatch.setattr(INDEX_CACHE, "max_bytes", one + one // 2)
    loaded = [load_index(v) for v in videos]
    assert len(INDEX_CACHE) == 1 and INDEX_CACHE.nbytes() <= INDEX_CACHE.max_bytes
    assert load_index(videos[2]) is loaded[2]  # the last one is still shared


def test_the_index_cache_is_safe_to_use_from_threads(videos: list[Path]) -> None:
    """Threads of a library user loading indexes at once: a trim walks the indexes kept
    while another thread adds one ("OrderedDict mutated during iteration" without a lock)."""
    indexes = [build_index(v) for v in videos]
    cache = IndexCache(kept=2, max_bytes=index_bytes(indexes[0]) * 2)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for r in range(2000):
                k = (t + r) % len(indexes)
                if cache.get(k) is None:
                    cache.put(k, indexes[k])
        except BaseException as exc:
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]
    assert len(cache) <= 2
