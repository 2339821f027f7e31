"""MP4/MOV edit lists: the frames are the ones a full decode outputs, which the edit list
decides (FFmpeg flags the packets outside it "discard" and the decoder drops their frames).

- A stream-copy cut at a frame that is not a keyframe (``ffmpeg -ss 1.3 -i in.mp4 -c copy``)
  keeps the packets from the keyframe before, with an edit list that starts at 1.3 s: the
  frames before it do not decode.
- A delayed start (``-itsoffset 0.5 -c copy``): an empty edit, the first frame at 0.5 s.
- Several edits (as editors and phone apps write to play parts of a recording): the
  packets in between are flagged discard, and the demuxer hands out some timestamps twice.
  Such a file was counted from its timestamps (102 frames where 50 decode), and every
  sample of it failed ("a full decode gives 50 frames, not the 102 the container's
  timestamps said").

Every file's frames are checked pixel for pixel against a full sequential decode with plain
PyAV.
"""

from __future__ import annotations

import struct
from pathlib import Path

import media
import numpy as np
import pytest

from framepipe.sources.video.source import VideoSource

pytestmark = pytest.mark.skipif(media.FFMPEG is None, reason="needs the ffmpeg command-line tool")
N, FPS = 150, 25
H264 = ["-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p"]
H264 += ["-x264-params", "keyint=50:min-keyint=50:scenecut=0:b-pyramid=normal"]


def _boxes(data: bytes, start: int, end: int) -> dict[str, tuple[int, int]]:
    """The MP4 boxes from ``start`` to ``end``: name -> (offset, size), the first of each."""
    out: dict[str, tuple[int, int]] = {}
    while start < end:
        size, name = struct.unpack(">I4s", data[start : start + 8])
        out.setdefault(name.decode("latin-1"), (start, size))
        start += size
    return out


def with_edits(src: Path, dst: Path, edits: list[tuple[float, float]]) -> Path:
    """``src`` (an MP4 with its index at the end and one video track) with its edit list
    replaced by ``edits``: (seconds played, media time in seconds; -1 for an empty edit)."""
    data = bytearray(src.read_bytes())
    top = _boxes(data, 0, len(data))
    mo, ms = top["moov"]
    assert top["mdat"][0] < mo  # the chunk offsets stay valid when the index grows
    moov = _boxes(data, mo + 8, mo + ms)
    to, ts = moov["trak"]
    eo, es = _boxes(data, to + 8, to + ts)["edts"]
    lo, ls = _boxes(data, eo + 8, eo + es)["elst"]
    mvhd = moov["mvhd"][0]
    movie_scale = struct.unpack(">I", data[mvhd + 20 : mvhd + 24])[0]
    mdia = _boxes(data, to + 8, to + ts)["mdia"]
    mdhd = _boxes(data, mdia[0] + 8, sum(mdia))["mdhd"][0]
    media_scale = struct.unpack(">I", data[mdhd + 20 : mdhd + 24])[0]
    body = struct.pack(">4sII", b"elst", 0, len(edits))
    for played, at in edits:
        when = -1 if at < 0 else round(at * media_scale)
        body += struct.pack(">IiHH", round(played * movie_scale), when, 1, 0)
    elst = struct.pack(">I", len(body) + 4) + body
    grow = len(elst) - ls
    out = data[:lo] + elst + data[lo + ls :]
    for offset, size in ((mo, ms), (to, ts), (eo, es)):
        struct.pack_into(">I", out, offset, size + grow)
    dst.write_bytes(bytes(out))
    return dst


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("edit_lists")
    src = media.ffmpeg_encode(d / "src.mp4", H264, N, FPS)
    media.ffmpeg("-ss", "1.3", "-i", str(src), "-c", "copy", str(d / "cut.mp4"))
    media.ffmpeg("-ss", "1.3", "-i", str(src), "-c", "copy", str(d / "cut.mov"))
    media.ffmpeg("-itsoffset", "0.5", "-i", str(src), "-c", "copy", str(d / "delayed.mp4"))
    # 1 s from 0.4 s, then 1 s from 3.0 s; the same after an empty edit of 0.5 s
    with_edits(src, d / "two_edits.mp4", [(1.0, 0.4), (1.0, 3.0)])
    with_edits(src, d / "gap_two_edits.mp4", [(0.5, -1), (1.0, 0.4), (1.0, 3.0)])
    return d


_TRUTH: dict[Path, tuple[list[np.ndarray], list[float | None]]] = {}


def truth(path: Path) -> tuple[list[np.ndarray], list[float | None]]:
    """Every frame a full sequential decode with plain PyAV outputs, and its time."""
    if path not in _TRUTH:
        import av

        with av.open(str(path)) as c:
            frames = list(c.decode(video=0))
            _TRUTH[path] = (
                [f.to_ndarray(format="rgb24") for f in frames],
                [f.time for f in frames],
            )
    return _TRUTH[path]


NAMES = ["cut.mp4", "cut.mov", "delayed.mp4", "two_edits.mp4", "gap_two_edits.mp4"]


def test_the_files_are_what_they_claim(edited: Path) -> None:
    frames, _ = truth(edited / "cut.mp4")
    assert [media.read_index(f) for f in frames[:2]] == [33, 34]  # 1.3 s in: from frame 33
    frames, times = truth(edited / "two_edits.mp4")
    shown = [media.read_index(f) for f in frames]
    assert shown == [*range(8, 33), *range(73, 98)]  # two stretches of 25 frames
    frames, times = truth(edited / "gap_two_edits.mp4")
    assert times[0] == pytest.approx(0.5) and len(frames) == 50


@pytest.mark.parametrize("name", NAMES)
def test_an_edit_list_gives_the_frames_a_full_decode_gives(edited: Path, name: str) -> None:
    path = edited / name
    frames, times = truth(path)
    src = VideoSource(path, backend="pyav")
    info = src.info()
    assert info.num_frames == len(frames)
    assert info.timestamps_s == pytest.approx(times)
    got = src.read(range(len(frames))).frames
    assert all(np.array_equal(a, b) for a, b in zip(got, frames, strict=True))
    for i in (0, 1, 24, 25, 26, len(frames) - 1):  # each alone: from the keyframe it needs
        assert np.array_equal(src.read([i]).frames[0], frames[i]), i
    signal = src.read_signal_ranges([(0, 5), (20, 30), (len(frames) - 5, len(frames))])
    assert len(signal) == 20
