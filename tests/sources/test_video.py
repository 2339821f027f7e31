"""The video source: exact frames for every container/codec and backend path.

Every test video's frames carry their own index in their pixels (tests/media.py), so each
sampled frame is checked against the index it was asked for.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
from fractions import Fraction
from pathlib import Path

import av
import media
import numpy as np
import pytest

from framepipe.errors import DecodeError, SourceError, UnsupportedInputError
from framepipe.sources import get_source_class, open_source
from framepipe.sources.video.decord_reader import decord_available
from framepipe.sources.video.source import VideoSource

needs_decord = pytest.mark.skipif(not decord_available(), reason="decord not installed")

# file -> (frames, keyframe interval)
FORMATS = {
    "h264.mp4": (90, 30),
    "mpeg4.avi": (90, 30),
    "vp8.webm": (90, 30),
    "vp9.webm": (90, 30),
    "mjpeg.avi": (60, 1),
    "vfr.mp4": (60, 30),
    "rot90.mp4": (40, 30),
    "rot180.mp4": (40, 30),
    "rot270.mp4": (40, 30),
    "one.mp4": (1, 30),
}
# backend=decord is refused (not silently wrong) on these
DECORD_REFUSES = {"mpeg4.avi", "vp8.webm", "vp9.webm", "rot90.mp4", "rot180.mp4", "rot270.mp4"}


def _indices(n: int, seed: int) -> list[int]:
    """Random order, a repeat, both ends."""
    rng = random.Random(seed)
    idx = rng.sample(range(n), min(n, 14))
    return [*idx, idx[0], 0, n - 1]


def _assert_exact(frames: np.ndarray, indices: list[int]) -> None:
    got = [media.read_index(f) for f in frames]
    assert got == indices


def test_registered_as_video_kind() -> None:
    assert get_source_class("video") is VideoSource


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("backend", ["pyav", "decord", "auto"])
def test_every_frame_is_exact(video_dir: Path, name: str, backend: str) -> None:
    n = FORMATS[name][0]
    if backend != "pyav" and not decord_available():
        pytest.skip("decord not installed")
    src = VideoSource(video_dir / name, backend=backend)
    if backend == "decord" and name in DECORD_REFUSES:
        with pytest.raises(SourceError, match="backend=decord cannot read this file"):
            src.info()
        return
    info = src.info()
    assert info.num_frames == n
    assert info.backend == ("pyav" if backend == "auto" else backend)
    idx = _indices(n, seed=len(name))
    batch = src.read(idx)
    assert batch.frames.shape == (len(idx), 120, 160, 3)
    _assert_exact(batch.frames, idx)
    assert batch.timestamps_s == tuple(info.timestamps_s[i] for i in idx)  # type: ignore[index]
    # every frame, in order, through one read
    _assert_exact(src.read(range(n)).frames, list(range(n)))


@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.avi", "vp8.webm", "vp9.webm"])
@pytest.mark.parametrize(("threads", "skip"), [(1, True), (2, True), (2, False), (3, True)])
def test_pyav_reader_settings_stay_exact(
    video_dir: Path, name: str, threads: int, skip: bool
) -> None:
    n = FORMATS[name][0]
    src = VideoSource(video_dir / name, backend="pyav", threads=threads, skip_nonref=skip)
    idx = _indices(n, seed=threads * 7 + skip)
    _assert_exact(src.read(idx).frames, idx)


def test_b_frame_files_really_reorder(video_dir: Path) -> None:
    for name in ("h264.mp4", "mpeg4.avi"):
        src = VideoSource(video_dir / name, backend="pyav")
        assert src.index.reordered, f"{name} should have B-frames"
        assert src.info().extra["reordered"] is True


@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.avi", "vp9.webm", "mjpeg.avi"])
def test_metadata(video_dir: Path, name: str) -> None:
    n, gop = FORMATS[name]
    info = VideoSource(video_dir / name).info()
    assert info.kind == "video"
    assert info.fps == Fraction(30)
    assert (info.width, info.height) == (160, 120)
    ts = np.asarray(info.timestamps_s)
    assert np.allclose(ts - ts[0], np.arange(n) / 30, atol=1.5e-3)
    assert info.duration_s == pytest.approx(n / 30, abs=2e-3)
    assert info.keyframe_indices is not None
    assert list(info.keyframe_indices[:3]) == [0, gop, 2 * gop]
    assert info.extra["codec"] in {"h264", "mpeg4", "vp9", "mjpeg"}


def test_variable_frame_rate_timestamps(video_dir: Path) -> None:
    n = FORMATS["vfr.mp4"][0]
    expected = np.asarray(media.vfr_pts_ms(n)) / 1000
    for backend in ["pyav", "decord"] if decord_available() else ["pyav"]:
        src = VideoSource(video_dir / "vfr.mp4", backend=backend)
        info = src.info()
        assert np.allclose(info.timestamps_s, expected, atol=1e-6)  # type: ignore[arg-type]
        # duration: first frame to the end of the last one (its own duration, as muxed)
        span = expected[-1] - expected[0]
        assert info.duration_s is not None
        assert span < info.duration_s <= span + 0.1
        # not index / fps: frame 10 is at its own presentation time
        assert info.time_of(10) == pytest.approx(expected[10])
        assert info.index_at(float(expected[33]) + 0.001) == 33
        idx = [3, 33, 59, 12]
        batch = src.read(idx)
        _assert_exact(batch.frames, idx)
        assert np.allclose(batch.timestamps_s, expected[idx])  # type: ignore[arg-type]


@pytest.mark.parametrize("rot", [90, 180, 270])
def test_rotation_is_applied(video_dir: Path, rot: int) -> None:
    src = VideoSource(video_dir / f"rot{rot}.mp4")
    info = src.info()
    assert info.extra["rotation"] == rot
    # stored sideways for 90/270, reported and returned upright
    coded = (src.index.coded_width, src.index.coded_height)
    assert coded == ((120, 160) if rot in (90, 270) else (160, 120))
    assert (info.width, info.height) == (160, 120)
    idx = [5, 0, 39, 31]
    _assert_exact(src.read(idx).frames, idx)
    small = src.read_small(0, 40, size=(80, 60), step=4)
    assert small.shape == (10, 60, 80, 3)
    _assert_exact(small, list(range(0, 40, 4)))


@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.avi", "vp8.webm", "mjpeg.avi"])
def test_read_small(video_dir: Path, name: str) -> None:
    n = FORMATS[name][0]
    src = VideoSource(video_dir / name)
    for start, end, step in [(0, n, 1), (7, n, 5), (n - 3, n + 10, 1)]:
        small = src.read_small(start, end, size=(80, 60), step=step)
        want = list(range(start, min(end, n), step))
        assert small.shape == (len(want), 60, 80, 3)
        assert small.dtype == np.uint8
        _assert_exact(small, want)
    assert src.read_small(n, n + 5).shape == (0, 36, 64, 3)
    with pytest.raises(ValueError, match="step"):
        src.read_small(0, n, step=0)


def test_out_of_range_and_empty_reads(h264_path: Path) -> None:
    src = VideoSource(h264_path)
    with pytest.raises(DecodeError, match=r"frame\(s\) \[90\] out of range 0..89"):
        src.read([0, 90])
    assert len(src.read([])) == 0


def test_auto_falls_back_to_decord_only_where_decord_is_exact(
    video_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framepipe.sources.video.pyav import PyAVReader

    def broken(self: PyAVReader, wanted: object, store: object) -> None:
        raise DecodeError(self.index.path, "simulated decoder failure")

    monkeypatch.setattr(PyAVReader, "read", broken)
    if decord_available():
        src = VideoSource(video_dir / "h264.mp4")
        _assert_exact(src.read([5, 61]).frames, [5, 61])
    with pytest.raises(DecodeError, match="simulated"):
        VideoSource(video_dir / "mpeg4.avi").read([5])  # decord refused: the error stands
    with pytest.raises(DecodeError, match="simulated"):
        VideoSource(video_dir / "h264.mp4", backend="pyav").read([5])


def test_bad_options(h264_path: Path) -> None:
    from framepipe.errors import ConfigError

    with pytest.raises(ConfigError, match="backend 'ffmpeg'"):
        VideoSource(h264_path, backend="ffmpeg")
    with pytest.raises(ConfigError, match="threads"):
        VideoSource(h264_path, threads=0)


def test_source_options_from_open_source(h264_path: Path) -> None:
    src = open_source(h264_path, backend="pyav", threads=1)
    assert isinstance(src, VideoSource)
    assert src.info().backend == "pyav"


# -- damaged and odd files -------------------------------------------------------------------
def _truncated_faststart(src: Path, dst: Path, fraction: float) -> Path:
    """An MP4 with its index first (``faststart``), cut short: the index over-reports."""
    import av

    full = dst.with_suffix(".full.mp4")
    with av.open(str(src)) as inp, av.open(str(full), "w", options={"movflags": "faststart"}) as o:
        s = inp.streams.video[0]
        out_stream = o.add_stream_from_template(s)
        for p in inp.demux(s):
            if p.dts is None:
                continue
            p.stream = out_stream
            o.mux(p)
    return media.truncated_copy(full, dst, fraction)


@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.avi", "vp9.webm", "mjpeg.avi"])
def test_truncated_file_counts_only_frames_that_decode(
    video_dir: Path, tmp_path: Path, name: str
) -> None:
    n = FORMATS[name][0]
    if name == "h264.mp4":
        cut = _truncated_faststart(video_dir / name, tmp_path / "cut.mp4", 0.6)
    else:
        cut = media.truncated_copy(video_dir / name, tmp_path / f"cut_{name}", 0.6)
    for backend in ["auto", "pyav"]:
        src = VideoSource(cut, backend=backend)
        info = src.info()
        assert 0 < info.num_frames < n
        assert info.backend == "pyav"  # decord is never let near a cut-short file
        # the frames a full decode outputs, a cut-off last picture (filled in by the
        # decoder) included; every other one shows the frame its timestamp says
        frames = src.read(range(info.num_frames)).frames
        ref = []
        with av.open(str(cut)) as c:
            for packet in c.demux(video=0):
                # a cut-off packet the decoder rejects makes no frame
                with contextlib.suppress(av.error.InvalidDataError):
                    ref += [f.to_ndarray(format="rgb24") for f in packet.decode()]
        assert len(ref) == info.num_frames
        assert all(np.array_equal(a, b) for a, b in zip(frames, ref))
        shown = [media.read_index(f) for f in frames]
        by_time = [round((t - info.timestamps_s[0]) * 30) for t in info.timestamps_s]  # type: ignore[index]
        if src.index.damaged:  # the last picture is cut off: not what decodes after it
            clean = src.index.frame_decode_pos < src.index.damage_pos
            assert 0 < clean.sum() < len(clean)
            shown = [s for s, ok in zip(shown, clean) if ok]
            by_time = [t for t, ok in zip(by_time, clean) if ok]
        assert shown == by_time
        assert shown == sorted(shown)


def _inflate_avi_header(src: Path, dst: Path, extra: int) -> Path:
    """Copy an AVI, making its headers claim ``extra`` more frames than it holds."""
    data = bytearray(src.read_bytes())
    for tag, offset in ((b"avih", 8 + 16), (b"strh", 8 + 32)):
        pos = data.find(tag)
        assert pos >= 0
        at = pos + offset
        value = int.from_bytes(data[at : at + 4], "little")
        data[at : at + 4] = (value + extra).to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst


def test_header_over_reporting_frames_keeps_decord_away(video_dir: Path, tmp_path: Path) -> None:
    bad = _inflate_avi_header(video_dir / "mjpeg.avi", tmp_path / "inflated.avi", 100)
    src = VideoSource(bad)
    assert src.index.header_frames == 160
    info = src.info()
    assert info.num_frames == 60
    assert info.backend == "pyav"
    _assert_exact(src.read([59, 0, 30]).frames, [59, 0, 30])
    if decord_available():
        with pytest.raises(SourceError, match="header claims 160 frames"):
            VideoSource(bad, backend="decord").info()


def _one_line(exc: BaseException, path: Path) -> str:
    msg = str(exc)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


@pytest.mark.parametrize(
    ("make", "cls", "reason"),
    [
        (lambda p: p.write_bytes(b""), UnsupportedInputError, "empty file"),
        (lambda p: p.write_text("hello, not a video\n" * 20), UnsupportedInputError, "not a"),
        (lambda p: media.audio_only(p), UnsupportedInputError, "no video stream"),
        (lambda p: p.mkdir(), UnsupportedInputError, "folder"),
        (lambda p: None, SourceError, "no such file"),
    ],
    ids=["zero-byte", "text", "audio-only", "folder", "missing"],
)
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_bad_input_one_line_errors(
    tmp_path: Path, make: object, cls: type[Exception], reason: str, backend: str
) -> None:
    p = tmp_path / "bad input.mp4"
    make(p)  # type: ignore[operator]
    with pytest.raises(cls) as err:
        VideoSource(p, backend=backend).info()
    assert reason in _one_line(err.value, p)


def test_moov_at_end_cut_short_is_an_input_error(video_dir: Path, tmp_path: Path) -> None:
    cut = media.truncated_copy(video_dir / "h264.mp4", tmp_path / "cut.mp4", 0.5)
    with pytest.raises(SourceError) as err:
        VideoSource(cut).info()
    _one_line(err.value, cut)


def test_one_frame_video(video_dir: Path) -> None:
    src = VideoSource(video_dir / "one.mp4")
    info = src.info()
    assert info.num_frames == 1
    assert info.duration_s == pytest.approx(1 / 30, abs=1e-3)
    _assert_exact(src.read([0, 0]).frames, [0, 0])


def test_path_with_spaces_and_non_ascii(video_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "vidéos à voir"
    d.mkdir()
    p = d / "clip ünïcode 日本.mp4"
    p.write_bytes((video_dir / "h264.mp4").read_bytes())
    for backend in ["pyav", "decord"] if decord_available() else ["pyav"]:
        src = VideoSource(p, backend=backend)
        _assert_exact(src.read([3, 77]).frames, [3, 77])
        assert src.info().id == str(p)


def test_reads_reuse_nothing_between_calls(h264_path: Path) -> None:
    """Repeated reads of the same source give the same pixels (no stale decoder state)."""
    src = VideoSource(h264_path, backend="pyav", threads=2)
    a = src.read([40, 10, 70]).frames
    b = src.read([70, 10, 40]).frames
    assert np.array_equal(a[0], b[2]) and np.array_equal(a[2], b[0])
    src.close()
    src.close()


@pytest.mark.parametrize("bad", [1.5, 2.0, True, "3", np.float64(0.7)])
def test_indices_that_are_not_integers_are_refused(h264_path: Path, bad: object) -> None:
    """``read([1.5])`` (say ``np.linspace`` without rounding) is a TypeError naming the
    value, not frame 1 (``int()`` cut it down: frame i must be the frame asked for); numpy
    integers are indices like any other."""
    src = VideoSource(h264_path)
    with pytest.raises(TypeError, match=r"frame indices must be integers, got "):
        src.read([0, bad])  # type: ignore[list-item]
    batch = src.read(np.array([3, 1], dtype=np.int32))
    assert batch.indices == (3, 1) and all(type(i) is int for i in batch.indices)
    _assert_exact(batch.frames, [3, 1])


def test_reading_clip_by_clip_opens_the_file_once(
    h264_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long video cut into windows is read one clip at a time: each read reuses the file
    the last one opened (opening an MP4 parses its sample tables, which grow with its
    length: once per clip made windows over a long video cost clips x length), the frames
    stay exact, and close() leaves no file open."""
    from framepipe.sources.video import pyav

    opened: list[Path] = []
    real_open = pyav.open_container

    def counting_open(path: Path) -> object:
        opened.append(path)
        return real_open(path)

    def open_fds() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if _points_at(fd, h264_path)) if fds.exists() else 0

    monkeypatch.setattr(pyav, "open_container", counting_open)
    gc.collect()  # other tests' sources of this file
    before = open_fds()
    src = VideoSource(h264_path, backend="pyav", threads=1)
    clips = [[35, 40], [50], [65, 70, 61], [80, 89], [45]]  # none decodes from packet 0
    for want in clips:
        _assert_exact(src.read(want).frames, want)
    assert len(opened) == 1
    _assert_exact(src.read([3, 5]).frames, [3, 5])  # packet 0: from a freshly opened file
    assert len(opened) == 2
    src.close()
    assert open_fds() == before


def _points_at(fd: Path, target: Path) -> bool:
    with contextlib.suppress(OSError):
        return Path(os.readlink(fd)) == target.resolve()
    return False


@pytest.mark.parametrize("threads", [1, 2])
def test_frames_are_converted_by_a_few_reused_swscale_contexts(
    h264_path: Path, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frame read is converted through one of at most
    ``threads`` swscale contexts kept across reads (a frame's own ``to_ndarray`` sets up a
    context, and its threads, per frame: on small frames that cost more than decoding them),
    and the pixels are a fresh context's."""
    import av.video.reformatter as avr

    from framepipe.sources.video import convert

    real = avr.VideoReformatter
    made: list[object] = []
    calls: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.r = real()
            made.append(self)

        def reformat(self, frame: object, **kw: object) -> object:
            calls.append(1)
            return self.r.reformat(frame, **kw)

    monkeypatch.setattr(avr, "VideoReformatter", Counting)
    monkeypatch.setattr(convert, "REFORMATTERS", convert.Reformatters())  # none made yet
    src = VideoSource(h264_path, backend="pyav", threads=threads)
    clips = [[35, 40, 5], [50, 88], [65, 70, 61, 10], [80, 89], [45, 1]]
    for want in clips:
        _assert_exact(src.read(want).frames, want)
    assert len(calls) == sum(len(c) for c in clips)
    assert 1 <= len(made) <= threads
    with av.open(str(h264_path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for want in clips:
        assert np.array_equal(src.read(want).frames, np.stack([frames[i] for i in want]))
