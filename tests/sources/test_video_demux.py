"""The video source's demuxes: none is left behind unfinished.

PyAV frees a demux generator's packet and stream table only when the generator ends or is
closed; one dropped before its end leaks them for the life of the process. A decoder
process reads millions of inputs, each indexed (a check of the first frames) and read
(stopping once it has its frames): a few hundred bytes an input, for good.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import media
import pytest

from framepipe.sources.video.lowres import read_signal
from framepipe.sources.video.source import VideoSource


class _Demux:
    """A demux generator that notes whether it ended (or raised) or was closed."""

    def __init__(self, gen: Iterator[Any]) -> None:
        self.gen = gen
        self.finished = False

    def __iter__(self) -> _Demux:
        return self

    def __next__(self) -> Any:
        try:
            return next(self.gen)
        except BaseException:
            self.finished = True
            raise

    def close(self) -> None:
        self.finished = True
        self.gen.close()  # type: ignore[attr-defined]


class _Container:
    """A PyAV input container whose demuxes are noted in ``made``."""

    def __init__(self, real: Any, made: list[_Demux]) -> None:
        self._real = real
        self._made = made

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __enter__(self) -> _Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()

    def demux(self, *args: Any, **kw: Any) -> _Demux:
        d = _Demux(self._real.demux(*args, **kw))
        self._made.append(d)
        return d


def test_indexing_and_reading_leave_no_demux_unfinished(
    h264_path: Path, video_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Indexing a file (its first frames checked, a cut file's last group too), reading
    clips that stop once they have their frames (from packet 0, after a seek), and reading
    the low-resolution signal part way: every demux they start ends or is closed."""
    made: list[_Demux] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: _Container(real_open(*a, **kw), made))
    fresh = shutil.copy(h264_path, tmp_path / "fresh.mp4")  # not indexed yet in this process
    cut = media.truncated_copy(video_dir / "mpeg4.avi", tmp_path / "cut.avi", 0.6)
    for path, clips in ((Path(fresh), [[3, 5], [35, 40], [50], [1]]), (cut, [[2], [31]])):
        src = VideoSource(path, backend="pyav", threads=1)
        info = src.info()
        for want in clips:
            src.read(want)
        src.close()
        read_signal(path, info, 31, 36)
    assert len(made) >= 8
    left = [k for k, d in enumerate(made) if not d.finished]
    assert left == []


class _FlushFails(_Container):
    """PyAV's demux on a damaged MPEG-TS where a stream appeared mid-file: every packet comes
    out, then its flush reads past its table of streams (IndexError)."""

    def demux(self, *args: Any, **kw: Any) -> Any:
        for packet in self._real.demux(*args, **kw):
            if packet.size == 0:  # the flush, after the last packet read
                raise IndexError("list index out of range")
            yield packet


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])  # .ts: indexed by decoding
def test_a_stream_appearing_mid_file_is_no_list_index_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """``framepipe shots damaged.ts`` said 'damaged.ts: IndexError: list index out of range'
    (and ``sample`` failed the file) where ffmpeg decodes every frame: PyAV's demux raises
    at its flush once the file's stream table grew. Every packet was read by then: the file
    has all its frames, exact, and its shots."""
    from framepipe.shots import detect_shots

    path = media.h264_mp4(tmp_path / "v.mp4", num_frames=30)
    if suffix == ".ts":
        media.ffmpeg("-i", str(path), "-c", "copy", str(tmp_path / "v.ts"))
        path = tmp_path / "v.ts"
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: _FlushFails(real_open(*a, **kw), []))
    with VideoSource(path, backend="pyav", threads=1) as src:
        info = src.info()
        assert info.num_frames == 30
        batch = src.read([0, 17, 29])
        assert [media.read_index(f) for f in batch.frames] == [0, 17, 29]
        assert detect_shots(src, info).shots == [(0, 30)]
