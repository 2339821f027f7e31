"""A manifest streams: memory does not grow with its number of rows (what tracemalloc finds
still allocated by the open stream after every input but the last was made and dropped),
and the local engine reads its tasks lazily (it never lists them). The 1,000,000-row figure
is benchmarks/bench_manifest.py's (BENCHMARKS.md)."""

from __future__ import annotations

import itertools
import pathlib
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import engine_plugins

from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.engine import EngineTask, LocalEngine, Work
from framepipe.inputs import collect_inputs


def _kept_while_streaming(manifest: Path, rows: int) -> int:
    """Bytes still allocated, once ``rows - 1`` of the manifest's ``rows`` inputs have been
    taken and dropped, by what was allocated since the stream began (the stream still open:
    what it holds on to is counted). Python 3.11's pathlib interns every part of a path
    (each row's cache path has one of its own), and the interpreter's table of interned
    strings, resized now and then as rows come and go, is left out: its size depends on
    everything else the process has interned, not on the rows."""
    tracemalloc.start(1)
    try:
        inputs, _ = collect_inputs([], inputs_from=manifest)
        stream = iter(inputs)
        n = sum(item.uri is not None for item in itertools.islice(stream, rows - 1))
        snap = tracemalloc.take_snapshot()
        assert n == rows - 1 and next(stream).uri is not None
    finally:
        tracemalloc.stop()
    interning = tracemalloc.Filter(False, pathlib.__file__)
    return sum(t.size for t in snap.filter_traces([interning]).traces)


def _write(path: Path, rows: int) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(rows):
            fh.write(f"s3://bucket/videos/{k // 1000:04d}/clip-{k:08d}.mp4\n")
    return path


def test_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    small = _write(tmp_path / "small.txt", 2_000)
    big = _write(tmp_path / "big.txt", 20_000)  # 1.2 MB of text
    kept_small = _kept_while_streaming(small, 2_000)
    kept_big = _kept_while_streaming(big, 20_000)
    # ten times the rows, the same memory held (within the allocator's noise): nothing is kept
    assert kept_big < 1.5 * kept_small + 256 * 1024, (kept_small, kept_big)
    # what a list of those inputs would hold, for scale
    tracemalloc.start()
    try:
        held = list(collect_inputs([], inputs_from=big)[0])
        listed = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == 20_000
    # streaming 18,000 more rows held on to less than 5% of what holding them takes
    assert kept_big - kept_small < 0.05 * listed * 18 / 20, (kept_small, kept_big, listed)


def test_the_engine_reads_its_tasks_lazily(tmp_path: Path) -> None:
    video = engine_plugins.make_video(tmp_path / "v.mp4", 10, seed=1)
    pulled: list[int] = []

    def tasks() -> Iterator[EngineTask]:
        for k in range(40):
            pulled.append(k)
            yield EngineTask(Input(video, "video", id=str(k)))

    engine = LocalEngine(workers=1, prefetch=1)
    results = engine.run(tasks(), Work(SampleConfig(n=2)))
    first = next(results)
    assert first.status == "ok"
    assert len(pulled) <= 4  # a stream of 40 is not listed to start
    rest = list(results)
    assert len(pulled) == 40 and 1 + len(rest) == 40
    assert sorted(int(r.extra["id"]) for r in [first, *rest]) == list(range(40))
