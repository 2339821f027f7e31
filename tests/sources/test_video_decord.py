"""The video source's decord paths: ``auto`` reports decord once decord has taken over a
file the PyAV reader failed on, and a decord failure while reading is a one-line
DecodeError naming the file (a ``failed`` record, not an unexpected error)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import media
import numpy as np
import pytest

from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.errors import DecodeError
from framepipe.read_clips import read_clips
from framepipe.sources.video.decord_reader import DecordReader, decord_available, decord_reason
from framepipe.sources.video.pyav import PyAVReader
from framepipe.sources.video.source import VideoSource

needs_decord = pytest.mark.skipif(not decord_available(), reason="decord not installed")

# What decord 0.6's DECORDError carries: a log prefix, the message, a native stack trace.
DECORD_TEXT = (
    "[07:23:23] /github/workspace/src/video/video_reader.cc:270: Check failed: "
    "ret >= 0 (-11 vs. 0) Failed to receive frame\n\n"
    "Stack trace returned 10 entries:\n[bt] (0) /usr/lib/libdecord.so(+0x1a2b3c) [0x7f00]\n"
    "[bt] (1) /usr/lib/libdecord.so(+0x4d5e6f) [0x7f01]\n"
)


@pytest.fixture(scope="module")
def small_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("followup_videos")
    return {
        "h264": media.h264_mp4(d / "h264.mp4", num_frames=30),
        "avi": media.mpeg4_avi(d / "mpeg4.avi", num_frames=30),  # decord refused (B-frames)
    }


@pytest.fixture
def pyav_broken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the PyAV reader fail every read; returns a list counting its calls."""
    calls: list[int] = []

    def broken(self: PyAVReader, wanted: object, store: object) -> None:
        calls.append(1)
        raise DecodeError(self.index.path, "simulated decoder failure")

    monkeypatch.setattr(PyAVReader, "read", broken)
    return calls


class _FailingReader:
    """Stands in for decord.VideoReader: its batch reads raise ``exc``."""

    def __init__(self, real: Any, exc: BaseException) -> None:
        self.real, self.exc = real, exc

    def __len__(self) -> int:
        return len(self.real)

    def get_frame_timestamp(self, idx: Any) -> Any:
        return self.real.get_frame_timestamp(idx)

    def get_batch(self, idx: Any) -> Any:
        raise self.exc


def _decord_fails(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    """decord opens and agrees with the index as usual, then fails on reading frames."""
    real_reader = DecordReader._reader

    def reader(self: DecordReader) -> Any:
        return _FailingReader(real_reader(self), exc)

    monkeypatch.setattr(DecordReader, "_reader", reader)


def _decord_error(text: str) -> BaseException:
    from framepipe.sources.video.decord_reader import import_decord

    exc: BaseException = import_decord().DECORDError(text)
    return exc


# -- the backend actually used ---------------------------------------------------------------
@needs_decord
def test_auto_reports_decord_after_it_took_over(
    small_videos: dict[str, Path], pyav_broken: list[int]
) -> None:
    src = VideoSource(small_videos["h264"])
    assert src.info().backend == "pyav"  # nothing has failed yet
    batch = src.read([5, 29, 0, 5])
    assert [media.read_index(f) for f in batch.frames] == [5, 29, 0, 5]
    assert src.backend == "decord"
    info = src.info()
    assert info.backend == "decord" and info.to_json()["backend"] == "decord"
    assert info.num_frames == 30 and info.timestamps_s is not None  # the rest unchanged
    assert len(pyav_broken) == 1
    # decord serves the next clips directly: the failing reader is not tried again
    batch = src.read([12, 3])
    assert [media.read_index(f) for f in batch.frames] == [12, 3]
    np.testing.assert_array_equal(batch.timestamps_s, [info.timestamps_s[12], info.timestamps_s[3]])
    assert len(pyav_broken) == 1


@needs_decord
def test_auto_reports_decord_when_info_comes_after_the_read(
    small_videos: dict[str, Path], pyav_broken: list[int]
) -> None:
    src = VideoSource(small_videos["h264"])
    src.read([7])  # read() builds info() itself, then falls back
    assert src.info().backend == "decord"


def test_backend_stays_pyav_when_pyav_reads(small_videos: dict[str, Path]) -> None:
    src = VideoSource(small_videos["h264"])
    assert [media.read_index(f) for f in src.read([1, 20]).frames] == [1, 20]
    assert src.info().backend == "pyav"


def test_backend_stays_pyav_when_decord_is_refused(
    small_videos: dict[str, Path], pyav_broken: list[int]
) -> None:
    src = VideoSource(small_videos["avi"])
    with pytest.raises(DecodeError, match="simulated"):
        src.read([5])
    assert src.info().backend == "pyav"


# -- decord errors while reading -----------------------------------------------------------
def test_decord_reason_is_one_short_line() -> None:
    reason = decord_reason(Exception(DECORD_TEXT))
    assert reason == "Check failed: ret >= 0 (-11 vs. 0) Failed to receive frame"
    assert decord_reason(RuntimeError("")) == "RuntimeError"
    assert len(decord_reason(RuntimeError("x" * 1000))) == 160


@needs_decord
@pytest.mark.parametrize("kind", ["DECORDError", "RuntimeError"])
def test_decord_read_error_is_a_one_line_decode_error(
    small_videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    exc = _decord_error(DECORD_TEXT) if kind == "DECORDError" else RuntimeError(DECORD_TEXT)
    _decord_fails(monkeypatch, exc)
    path = small_videos["h264"]
    src = VideoSource(path, backend="decord")
    assert src.info().backend == "decord"
    with pytest.raises(DecodeError) as err:
        src.read([29, 5, 5])
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "decord failed on frame(s) [5, 29]" in msg
    assert "Failed to receive frame" in msg and "Stack trace" not in msg


@needs_decord
def test_auto_fallback_whose_decord_read_fails_is_a_decode_error(
    small_videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, pyav_broken: list[int]
) -> None:
    _decord_fails(monkeypatch, _decord_error(DECORD_TEXT))
    src = VideoSource(small_videos["h264"])
    with pytest.raises(DecodeError, match="decord failed on frame"):
        src.read([3])
    assert src.info().backend == "pyav"  # decord served nothing


@needs_decord
def test_decord_read_error_is_a_failed_record_not_an_unexpected_error(
    small_videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _decord_fails(monkeypatch, _decord_error(DECORD_TEXT))
    path = small_videos["h264"]
    cfg = SampleConfig(n=4, source_options={"backend": "decord"})
    with caplog.at_level(logging.WARNING):
        jobs = list(read_clips(Input(path, "video"), cfg))
    assert len(jobs) == 1
    rec = jobs[0].record()
    assert rec.status == "failed" and rec.error is not None
    assert rec.error.startswith(str(path)) and "\n" not in rec.error
    assert "decord failed on frame(s)" in rec.error
    assert rec.indices is not None and len(rec.indices) == 4  # the selection is kept
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "unexpected" not in caplog.text


# -- files whose first frame is not at time 0 ------------------------------------------------
def _late_start(d: Path, name: str) -> Path:
    """150 self-indexing frames (H.264 with B-frames, 25 fps) in a file whose first frame
    is not at 0 s: a delayed start (``-itsoffset``), a fragmented MP4 as recorders write it,
    a Matroska file with a start offset."""
    h264 = ["-c:v", "libx264", "-bf", "3", "-g", "50", "-pix_fmt", "yuv420p"]
    src = media.ffmpeg_encode(d / "src.mp4", h264, 150, 25)
    out = d / name
    if name == "delayed.mp4":
        media.ffmpeg("-itsoffset", "0.5", "-i", str(src), "-c", "copy", str(out))
    elif name == "fragmented.mp4":
        media.ffmpeg(
            "-i", str(src), "-c", "copy", "-movflags", "frag_keyframe+empty_moov", str(out)
        )
    else:
        media.ffmpeg("-i", str(src), "-c", "copy", "-output_ts_offset", "3.2", str(out))
    return out


@needs_decord
@pytest.mark.skipif(media.FFMPEG is None, reason="needs the ffmpeg command-line tool")
@pytest.mark.parametrize("name", ["delayed.mp4", "fragmented.mp4", "offset.mkv"])
def test_decord_reads_a_video_whose_first_frame_is_not_at_zero(tmp_path: Path, name: str) -> None:
    """decord counts its timestamps from the stream's start; that alone is no reason to
    refuse a file it reads exactly (the frames' timestamps stay the index's)."""
    path = _late_start(tmp_path, name)
    pyav = VideoSource(path, backend="pyav").info()
    assert pyav.timestamps_s is not None and pyav.timestamps_s[0] > 0.05  # a late start
    src = VideoSource(path, backend="decord")
    assert src.info().backend == "decord"
    want = [0, 1, 49, 50, 51, 97, 149]
    batch = src.read(want)
    assert [media.read_index(f) for f in batch.frames] == want
    assert batch.timestamps_s == tuple(pyav.timestamps_s[i] for i in want)
