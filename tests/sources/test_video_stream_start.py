"""Exact frames where going back to the start of the stream, or a decoder's frame skipping,
used to fail.

- MPEG-TS, MPEG-PS and fragmented MP4 with B-frames: these demuxers seek by decode time, so a
  seek to the first packet's presentation time lands after it; every read that starts from
  the first keyframe failed ("the demuxer's packet 0 is not the index's").
- Matroska that starts with frames that are not keyframes (cut with ``-c copy``): a seek to
  0 lands on the first keyframe, so indexing failed.
- Matroska whose first packets carry no timestamp at all (negative times written with
  ``-avoid_negative_ts disabled``): refused.
- AV1 (libdav1d reads ``skip_frame`` only when it is opened): a reader that asked it to skip
  unreferenced frames on the way to a wanted one never got a wanted frame that nothing
  refers to, and the shot signal's "every frame" ranges came back with holes.
- MPEG-TS with a hole (packet loss, as in IPTV and broadcast recordings): a corrupt packet in
  the middle was dropped as if the file ended there, so frames went missing and later ones
  shifted; frames decoded after the hole came out differently when read alone (the decoder
  fills in what is lost from whatever it decoded before, and differently on other threads).
- MPEG-TS cut mid-picture: its last frame, filled in by the decoder, was not the full
  decode's.
- MPEG-TS segments joined end to end (``cat``, as HLS segments are, across a timestamp
  discontinuity): the first segment's last packet, flagged corrupt, was dropped as the end
  of the file, and frames went missing (249 of 300 in two 6 s segments), every later one
  shifted.

Every file's frames are checked pixel for pixel against a full sequential decode with plain
PyAV (the truth: frame i is the i-th frame it outputs).
"""

from __future__ import annotations

import random
from pathlib import Path

import media
import numpy as np
import pytest

from framepipe.sources.video.source import VideoSource

FFMPEG = media.FFMPEG
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg command-line tool")
FPS = 25
N = 60
H264 = ["-c:v", "libx264", "-bf", "3", "-g", "20", "-pix_fmt", "yuv420p"]
H264 += ["-x264-params", "scenecut=0:b-pyramid=normal"]


ffmpeg = media.ffmpeg


def encode(path: Path, args: list[str], n: int = N) -> Path:
    """Self-indexing frames 0..n-1 (160x120, 25 fps), encoded by ffmpeg with ``args``."""
    return media.ffmpeg_encode(path, args, n, FPS)


def busy_video(path: Path, args: list[str]) -> Path:
    """``testsrc2`` at 320x240, 25 fps, N frames (busier pictures than the self-indexing
    ones: an MPEG-PS pack then holds less than a picture, as in real files)."""
    src = f"testsrc2=size=320x240:rate={FPS}"
    ffmpeg("-f", "lavfi", "-i", src, "-frames:v", str(N), *args, str(path))
    return path


def _has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:  # not in this PyAV build
        return False
    return True


def busy_ts(path: Path) -> Path:
    """4 s of ``testsrc2`` in MPEG-TS, open GOPs and B-pyramid (a broadcast-like stream)."""
    src = "testsrc2=size=160x120:rate=25"
    x264 = "open-gop=1:b-pyramid=normal:bframes=3:keyint=20"
    args = ["-c:v", "libx264", "-x264-params", x264, "-pix_fmt", "yuv420p"]
    ffmpeg("-f", "lavfi", "-i", src, "-t", "4", *args, str(path))
    return path


def corrupt_packets(path: Path) -> list[int]:
    """Decode positions of the packets the demuxer flags corrupt."""
    import av

    with av.open(str(path)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    return [i for i, p in enumerate(packets) if p.is_corrupt] or [-1]


def untimed_packets(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for p in c.demux(s) if p.size and p.pts is None and p.dts is None)


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("stream_start")
    encode(d / "h264.ts", H264)
    busy_video(d / "mpeg2.mpg", ["-c:v", "mpeg2video", "-bf", "2", "-g", "12", "-q:v", "3"])
    encode(d / "fragmented.mp4", [*H264, "-movflags", "frag_keyframe+empty_moov"])
    mkv = encode(d / "h264.mkv", H264)
    # cut at frame 13 without re-encoding: frames 13..19 come before the first keyframe
    ffmpeg("-i", str(mkv), "-ss", "0.52", "-c", "copy", "-copyinkf", str(d / "cut.mkv"))
    ffmpeg(
        *("-i", str(mkv), "-c", "copy", "-output_ts_offset", "-0.5"),
        *("-avoid_negative_ts", "disabled", str(d / "untimed.mkv")),
    )
    ts = busy_ts(d / "opengop.ts")
    data = ts.read_bytes()
    (d / "ts_cut.ts").write_bytes(data[: len(data) * 7 // 10])
    (d / "ts_gap.ts").write_bytes(data[: 188 * 150] + data[188 * 190 :])
    for at in range(100, 300, 10):  # where a cut leaves a corrupt packet in the middle
        (d / "ts_hole.ts").write_bytes(data[: 188 * at] + data[188 * (at + 40) :])
        if 0 < corrupt_packets(d / "ts_hole.ts")[0] < 90:
            break
    # two segments joined with ``cat``, the second's timestamps 5000 s on (a discontinuity)
    later = d / "later.ts"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-ss", "100", "-t", "4"),
        *("-c:v", "libx264", "-x264-params", "bframes=3:keyint=50", "-pix_fmt", "yuv420p"),
        *("-output_ts_offset", "5000", str(later)),
    )
    (d / "joined.ts").write_bytes(data + later.read_bytes())
    if _has_encoder("libsvtav1"):
        media.encode_video(
            d / "av1.webm", codec="libsvtav1", num_frames=N, gop=30, options={"preset": "10"}
        )
    return d


NAMES = ["h264.ts", "mpeg2.mpg", "fragmented.mp4", "cut.mkv", "untimed.mkv", "av1.webm"]
NAMES += ["ts_hole.ts", "ts_gap.ts", "ts_cut.ts", "joined.ts"]
_TRUTH: dict[Path, list[np.ndarray]] = {}


def video(stream_dir: Path, name: str) -> Path:
    path = stream_dir / name
    if name == "av1.webm" and not path.exists():
        pytest.skip("PyAV has no libsvtav1 encoder")
    if name == "untimed.mkv" and not untimed_packets(path):
        pytest.skip("this ffmpeg writes a timestamp on every packet")
    return path


def truth(path: Path) -> list[np.ndarray]:
    """Every frame a full sequential decode with plain PyAV outputs, in order."""
    if path not in _TRUTH:
        import av

        with av.open(str(path)) as c:
            _TRUTH[path] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return _TRUTH[path]


def test_the_files_are_what_they_claim(stream_dir: Path) -> None:
    import av

    with av.open(str(stream_dir / "cut.mkv")) as c:
        first = next(p for p in c.demux(video=0) if p.size)
    assert not first.is_keyframe
    assert len(truth(stream_dir / "cut.mkv")) < N  # the leading frames do not decode
    with av.open(str(stream_dir / "h264.ts")) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert pts != sorted(pts)  # B-frames
    assert 0 < corrupt_packets(stream_dir / "ts_hole.ts")[0] < 90  # a hole in the middle
    assert corrupt_packets(stream_dir / "ts_gap.ts") == [-1]  # whole packets missing


def test_a_damaged_stream_counts_what_a_full_decode_outputs(stream_dir: Path) -> None:
    """The frames of a stream with a hole are what decodes, the damaged ones included."""
    for name in ("ts_hole.ts", "ts_gap.ts", "ts_cut.ts", "joined.ts"):
        path = stream_dir / name
        info = VideoSource(path).info()
        assert info.num_frames == len(truth(path)), name


@pytest.mark.parametrize("name", NAMES)
def test_all_frames_in_one_read(stream_dir: Path, name: str) -> None:
    path = video(stream_dir, name)
    ref = truth(path)
    src = VideoSource(path, backend="pyav")
    assert src.info().num_frames == len(ref)
    frames = src.read(range(len(ref))).frames
    for i, frame in enumerate(frames):
        assert np.array_equal(frame, ref[i]), i
    ts = np.asarray(src.info().timestamps_s)
    assert np.all(np.diff(ts) > 0)


@pytest.mark.parametrize("name", NAMES)
def test_every_frame_alone(stream_dir: Path, name: str) -> None:
    """One frame a read: each read decodes from the keyframe it needs, the first group's
    from the start of the stream, skipping unreferenced frames on the way."""
    path = video(stream_dir, name)
    ref = truth(path)
    src = VideoSource(path, backend="pyav", threads=1)
    for i in range(len(ref)):
        assert np.array_equal(src.read([i]).frames[0], ref[i]), i


@pytest.mark.parametrize("name", NAMES)
def test_random_reads_on_several_threads(stream_dir: Path, name: str) -> None:
    path = video(stream_dir, name)
    ref = truth(path)
    src = VideoSource(path, backend="pyav", threads=3)
    rng = random.Random(7)
    idx = [rng.randrange(len(ref)) for _ in range(20)] + [0, len(ref) - 1, 0]
    frames = src.read(idx).frames
    for k, i in enumerate(idx):
        assert np.array_equal(frames[k], ref[i]), i


@pytest.mark.parametrize("name", NAMES)
def test_signal_ranges_hold_every_frame(stream_dir: Path, name: str) -> None:
    """The shot signal's exact ranges: each from the keyframe it needs (or the start),
    unreferenced frames skipped only before the range."""
    path = video(stream_dir, name)
    n = len(truth(path))
    src = VideoSource(path)
    spans = [(0, 5), (20, 33), (n - 9, n)]
    got = src.read_signal_ranges(spans)
    assert got.indices.tolist() == sorted({i for a, b in spans for i in range(a, b)})
