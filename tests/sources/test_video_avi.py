"""Exact frames where the container's timestamps are not the decoder's order (issue 11.1).

DivX/XviD AVI with B-frames (MPEG-4 Part 2, "packed" or not), the same streams remuxed to
other containers, H.264 in AVI, and H.264 in Matroska whose timestamps are decode times (all
or only after the first frames). Each file's frames carry their own index in their pixels
(tests/media.py) and are encoded by the ffmpeg command-line tool; every reader path is checked
against a full sequential decode with plain PyAV (the truth: frame i is the i-th frame it
outputs): sequential and random reads, one frame at a time, both backends, the frame count,
the timestamps and keyframes, and the shot-signal reader's indices.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
from pathlib import Path
from typing import Any

import media
import numpy as np
import pytest

import framepipe.sources.video.lowres as lowres
from framepipe.errors import SourceError
from framepipe.sources.video.decord_reader import decord_available
from framepipe.sources.video.index import build_index, load_index
from framepipe.sources.video.pyav import PyAVReader
from framepipe.sources.video.source import VideoSource

FFMPEG = media.FFMPEG
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg command-line tool")


def _encoders() -> str:
    if FFMPEG is None:
        return ""
    res = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True)
    return res.stdout


HAVE_XVID = " libxvid " in _encoders()
FPS = 25
N = 100


ffmpeg = media.ffmpeg


def encode(path: Path, args: list[str], n: int = N) -> Path:
    """Self-indexing frames 0..n-1 (160x120, 25 fps), encoded by ffmpeg with ``args``."""
    return media.ffmpeg_encode(path, args, n, FPS)


def remux_with_decode_times(src: Path, dst: Path, after: int = 0) -> Path:
    """H.264 packets copied into Matroska with decode times as presentation times from
    packet ``after`` on (shifted past the earlier ones): the container then says decode
    order is presentation order there, as a bad AVI remux does."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        shift = 4 * round(1 / (FPS * s_in.time_base)) if after else 0
        for k, packet in enumerate(p for p in inp.demux(s_in) if p.size):
            if k >= after:
                packet.pts = packet.dts + shift
            packet.stream = s_out
            out.mux(packet)
    return dst


@pytest.fixture(scope="session")
def avi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("avi_videos")
    mpeg4 = ["-c:v", "mpeg4", "-bf", "2", "-g", "24", "-q:v", "3"]
    encode(d / "mpeg4.avi", [*mpeg4, "-vtag", "XVID"])
    encode(d / "divx.avi", ["-c:v", "mpeg4", "-bf", "1", "-g", "30", "-q:v", "3", "-vtag", "DX50"])
    encode(d / "mpeg4_nob.avi", ["-c:v", "mpeg4", "-bf", "0", "-g", "24", "-vtag", "XVID"])
    encode(d / "mjpeg.avi", ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"])
    h264 = ["-c:v", "libx264", "-bf", "3", "-g", "24", "-crf", "18"]
    encode(d / "h264.avi", [*h264, "-pix_fmt", "yuv420p"])
    mp4 = encode(d / "h264.mp4", [*h264, "-pix_fmt", "yuv420p", "-x264-params", "scenecut=0"])
    remux_with_decode_times(mp4, d / "h264_decode_times.mkv")
    remux_with_decode_times(mp4, d / "h264_late_decode_times.mkv", after=40)
    if HAVE_XVID:
        xvid = encode(d / "xvid.avi", ["-c:v", "libxvid", "-bf", "2", "-g", "24", "-q:v", "3"])
        ffmpeg("-fflags", "+genpts", "-i", str(xvid), "-c", "copy", str(d / "xvid.mkv"))
        ffmpeg("-fflags", "+genpts", "-i", str(xvid), "-c", "copy", str(d / "xvid.mp4"))
        unpack = ["-c", "copy", "-bsf:v", "mpeg4_unpack_bframes"]
        ffmpeg("-i", str(xvid), *unpack, str(d / "xvid_unpacked.avi"))
        # the issue's own command (testsrc, not self-indexing: compared pixel for pixel)
        src = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "4"]
        ffmpeg(*src, "-c:v", "libxvid", "-bf", "2", "-vtag", "XVID", str(d / "testsrc.avi"))
    return d


XVID = ["xvid.avi", "xvid.mkv", "xvid.mp4", "xvid_unpacked.avi"]
NAMES = [
    "mpeg4.avi",
    "divx.avi",
    "mpeg4_nob.avi",
    "mjpeg.avi",
    "h264.avi",
    "h264_decode_times.mkv",
    *XVID,
]
# the index must have found the order by decoding (the others: from the timestamps)
DECODED = set(NAMES) - {"mjpeg.avi"}


@dataclasses.dataclass
class Truth:
    """A full sequential decode with plain PyAV (one thread)."""

    content: list[int]
    """The index each output frame carries (what frame i must show)."""
    keys: list[int]
    """Outputs the decoder flags as keyframes."""
    times: list[float | None]


_TRUTH: dict[Path, Truth] = {}


def truth(path: Path) -> Truth:
    if path not in _TRUTH:
        import av

        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            frames = [(f.to_ndarray(format="rgb24"), f.key_frame, f.time) for f in c.decode(s)]
        _TRUTH[path] = Truth(
            [media.read_index(f) for f, _, _ in frames],
            [k for k, (_, key, _) in enumerate(frames) if key],
            [t for _, _, t in frames],
        )
    return _TRUTH[path]


def video(avi_dir: Path, name: str) -> Path:
    if name in XVID and not HAVE_XVID:
        pytest.skip("ffmpeg has no libxvid encoder")
    return avi_dir / name


def contents(frames: np.ndarray) -> list[int]:
    return [media.read_index(f) for f in frames]


def _indices(n: int, seed: int) -> list[int]:
    """Random order, repeats, both ends."""
    rng = random.Random(seed)
    idx = rng.sample(range(n), min(n, 25))
    return [*idx, idx[0], idx[3], 0, n - 1, n - 1]


@pytest.mark.parametrize("name", NAMES)
def test_count_order_and_sequential_read(avi_dir: Path, name: str) -> None:
    path = video(avi_dir, name)
    ref = truth(path)
    assert len(set(ref.content)) == len(ref.content) and -1 not in ref.content  # sanity
    src = VideoSource(path, backend="pyav")
    info = src.info()
    assert info.num_frames == len(ref.content)
    assert src.index.order == ("decoded" if name in DECODED else "timestamps")
    assert contents(src.read(range(info.num_frames)).frames) == ref.content


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("threads", "skip"), [(1, True), (1, False), (3, True)])
def test_random_reads_any_order_with_repeats(
    avi_dir: Path, name: str, threads: int, skip: bool
) -> None:
    path = video(avi_dir, name)
    ref = truth(path).content
    src = VideoSource(path, backend="pyav", threads=threads, skip_nonref=skip)
    for seed in range(3):
        idx = _indices(len(ref), seed * 10 + threads)
        batch = src.read(idx)
        assert contents(batch.frames) == [ref[i] for i in idx]
        assert batch.timestamps_s == tuple(src.info().timestamps_s[i] for i in idx)  # type: ignore[index]


@pytest.mark.parametrize("name", NAMES)
def test_every_frame_alone_after_a_seek(avi_dir: Path, name: str) -> None:
    path = video(avi_dir, name)
    ref = truth(path).content
    src = VideoSource(path, backend="pyav", threads=1)
    got = [media.read_index(src.read([i]).frames[0]) for i in reversed(range(len(ref)))]
    assert got[::-1] == ref


@pytest.mark.parametrize("name", NAMES)
def test_read_small_is_exact(avi_dir: Path, name: str) -> None:
    path = video(avi_dir, name)
    ref = truth(path).content
    src = VideoSource(path)
    small = src.read_small(3, len(ref), size=(media.W, media.H), step=4)
    assert contents(small) == ref[3::4]


@pytest.mark.parametrize("name", NAMES)
def test_timestamps_and_keyframes(avi_dir: Path, name: str) -> None:
    path = video(avi_dir, name)
    ref = truth(path)
    info = VideoSource(path).info()
    ts = np.asarray(info.timestamps_s)
    assert len(ts) == info.num_frames
    assert np.all(np.diff(ts) > 0)  # strictly increasing, in output order
    assert info.fps is not None and abs(info.fps - FPS) <= 1  # xvid.mp4 says 24.5 (98 in 4 s)
    # best effort: about one frame period apart on average, none further than a few
    assert np.median(np.diff(ts)) == pytest.approx(1 / FPS, abs=1e-6)
    assert float(np.max(np.diff(ts))) <= 4 / FPS + 1e-6
    assert info.duration_s == pytest.approx(ts[-1] - ts[0] + 1 / FPS, abs=1e-3)
    times = ref.times
    if all(t is not None for t in times) and np.all(np.diff(np.asarray(times, float)) > 0):
        assert np.allclose(ts, np.asarray(times, float), atol=1e-6)  # the decoder's own
    assert info.keyframe_indices is not None
    keys = list(info.keyframe_indices)
    assert keys[0] == 0 and set(keys) <= set(ref.keys)
    assert len(keys) >= info.num_frames // 30


@pytest.mark.parametrize("name", NAMES)
def test_decord_exact_or_refused(avi_dir: Path, name: str) -> None:
    if not decord_available():
        pytest.skip("decord not installed")
    path = video(avi_dir, name)
    ref = truth(path).content
    src = VideoSource(path, backend="decord")
    try:
        info = src.info()
    except SourceError as exc:
        assert "backend=decord cannot read this file exactly" in str(exc)
        assert "\n" not in str(exc)
        return
    assert name not in DECODED
    idx = _indices(info.num_frames, 5)
    assert contents(src.read(idx).frames) == [ref[i] for i in idx]


@pytest.mark.parametrize("name", sorted(DECODED))
def test_decord_refused_where_order_is_decoded(avi_dir: Path, name: str) -> None:
    if not decord_available():
        pytest.skip("decord not installed")
    with pytest.raises(SourceError, match="backend=decord cannot read this file exactly"):
        VideoSource(video(avi_dir, name), backend="decord").info()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("skip", ["none", "nonref", "bidir"])
def test_signal_indices_follow_the_decoder(avi_dir: Path, name: str, skip: str) -> None:
    path = video(avi_dir, name)
    ref = truth(path).content
    src = VideoSource(path)
    info = src.info()
    n = info.num_frames
    size = (media.W, media.H)
    sig = lowres.read_signal(path, info, 7, n - 5, size=size, skip=skip)  # type: ignore[arg-type]
    idx = [int(i) for i in sig.indices]
    assert idx == sorted(set(idx)) and idx[0] >= 7 and idx[-1] < n - 5
    if skip == "none":
        assert idx == list(range(7, n - 5))
    if skip != "bidir":  # skipping reference B-frames may leave later frames approximate
        assert [_luma_index(f) for f in sig.frames] == [ref[i] for i in idx]
    ranges = [(n - 20, n - 12), (5, 9), (40, 47)]
    full = lowres.read_full_ranges(path, info, ranges, size=size)
    want = sorted({i for a, b in ranges for i in range(a, b)})
    assert [int(i) for i in full.indices] == want
    assert [_luma_index(f) for f in full.frames] == [ref[i] for i in want]
    # the source's own signal methods agree
    assert np.array_equal(src.read_signal(7, n - 5, size=size, skip=skip).indices, sig.indices)  # type: ignore[arg-type]


def _luma_index(yuv: np.ndarray) -> int:
    return media.read_index(np.repeat(yuv[..., :1], 3, axis=2))


def test_the_issue_command_reads_every_index_exactly(avi_dir: Path) -> None:
    """`ffmpeg -f lavfi -i testsrc=... -c:v libxvid -bf 2 -vtag XVID`: every index failed
    with 'frame(s) [12, 24, 36, ...] did not decode'; now each is the full decode's frame,
    pixel for pixel."""
    import av

    path = video(avi_dir, "xvid.avi").with_name("testsrc.avi")
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
    src = VideoSource(path, backend="pyav")
    assert src.info().num_frames == len(ref)
    assert np.array_equal(src.read(range(len(ref))).frames, ref)
    idx = _indices(len(ref), 1)
    assert np.array_equal(src.read(idx).frames, ref[idx])


@pytest.mark.parametrize("name", ["xvid.avi", "mpeg4.avi", "h264_decode_times.mkv"])
def test_counted_reads_when_packets_cannot_be_told_apart(avi_dir: Path, name: str) -> None:
    """The last resort (no usable packet identity): decode from the start, count frames."""
    path = video(avi_dir, name)
    ref = truth(path).content
    index = dataclasses.replace(build_index(path), seekable=False)
    reader = PyAVReader(index, threads=2)
    got: dict[int, Any] = {}
    idx = _indices(index.num_frames, 2)
    reader.read(idx, lambda i, frame: got.__setitem__(i, frame.to_ndarray(format="rgb24")))
    assert [media.read_index(got[i]) for i in idx] == [ref[i] for i in idx]


def test_wrong_timestamps_after_the_first_frames_are_caught(
    avi_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Timestamps that go wrong only after the frames checked at open: a read notices the
    decoder's order differs, indexes the file again by decoding it, and stays exact."""
    path = avi_dir / "h264_late_decode_times.mkv"
    ref = truth(path).content
    src = VideoSource(path, backend="pyav", threads=1)
    assert src.index.order == "timestamps"  # the first frames agree
    idx = [80, 50, 2]
    assert contents(src.read(idx).frames) == [ref[i] for i in idx]
    assert src.index.order == "decoded"
    assert "indexing it again" in caplog.text
    assert contents(src.read(range(len(ref))).frames) == ref
    assert load_index(path).order == "decoded"  # the signal reader gets the same index


def test_shot_signal_reindexes_on_late_wrong_timestamps(avi_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "late.mkv"  # a copy: an index of its own
    path.write_bytes((avi_dir / "h264_late_decode_times.mkv").read_bytes())
    ref = truth(avi_dir / "h264_late_decode_times.mkv").content
    info = VideoSource(path).info()
    assert load_index(path).order == "timestamps"
    size = (media.W, media.H)
    sig = lowres.read_signal(path, info, 30, 90, size=size, skip="none")
    assert [int(i) for i in sig.indices] == list(range(30, 90))
    assert [_luma_index(f) for f in sig.frames] == ref[30:90]
    assert load_index(path).order == "decoded"
