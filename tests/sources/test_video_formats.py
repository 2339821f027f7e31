"""Videos in unusual pixel formats and with unusual streams.

- Full-range video (``yuvj420p``, ``color_range=pc``: MJPEG, many phone recordings) and grey
  video: the shot signal, limited-range YUV for every other video and for images, kept the
  full range, so the same pictures gave the detector more contrast (a false cut in a
  Mandelbrot zoom).
- Video with alpha (PNG or QuickTime Animation in MOV, ProRes 4444, FFV1, GIF): its frames
  showed whatever colour the encoder left under transparent pixels (black, mostly), where
  the same pictures as images are composited on white (the source option ``background``);
  decord, which drops alpha, read such files too.
- An audio file with cover art (M4A/MP4 with an ``attached_pic`` stream) failed as "no video
  stream (audio-only or data file)"; it says it holds only a cover picture.
"""

from __future__ import annotations

from pathlib import Path

import media
import numpy as np
import pytest
from PIL import Image

from framepipe.errors import SourceError, UnsupportedInputError
from framepipe.sources.base import open_source
from framepipe.sources.video.decord_reader import decord_available
from framepipe.sources.video.source import VideoSource


def test_full_range_video_has_the_limited_range_signal(tmp_path: Path) -> None:
    """The same pictures as full-range and as limited-range H.264 (near lossless) give the
    same shot signal, within rounding; the full-range one's luma was stretched (16 levels
    at black)."""
    opts = {"x264-params": "qp=0", "crf": "0"}
    limited = media.encode_video(tmp_path / "tv.mp4", num_frames=6, options=opts)
    full = media.encode_video(tmp_path / "pc.mp4", num_frames=6, options=opts, pix_fmt="yuvj420p")
    with VideoSource(limited) as a, VideoSource(full) as b:
        sa = a.read_signal(0, 6, skip="none").frames.astype(int)
        sb = b.read_signal(0, 6, skip="none").frames.astype(int)
    assert np.abs(sa - sb).max() <= 3


def _rgba_frames(n: int) -> list[np.ndarray]:
    """Index frames whose left half is transparent, black under it (as encoders leave it),
    and a half-transparent stripe."""
    out = []
    for i in range(n):
        rgba = np.dstack([media.frame_for_index(i), np.full((media.H, media.W), 255, np.uint8)])
        rgba[:, : media.W // 2] = 0
        rgba[: media.H // 4, media.W // 2 :, 3] = 128
        out.append(rgba)
    return out


def _png_mov(path: Path, frames: list[np.ndarray]) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=25)
        stream.width, stream.height = media.W, media.H
        stream.pix_fmt = "rgba"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgba")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_video_with_alpha_is_composited_like_the_same_images(tmp_path: Path) -> None:
    frames = _rgba_frames(3)
    video = _png_mov(tmp_path / "alpha.mov", frames)
    scene = tmp_path / "scene"
    scene.mkdir()
    for i, img in enumerate(frames):
        Image.fromarray(img, "RGBA").save(scene / f"view_{i}.png")
    with open_source(video) as v, open_source(scene) as s:
        got = v.read([0, 1, 2]).frames.astype(int)
        want = s.read([0, 1, 2]).frames.astype(int)
        small = v.read_small(0, 3, size=(40, 30))
    assert np.abs(got - want).max() <= 1
    assert (got[:, :, : media.W // 2] == 255).all()  # white, not the black under it
    assert (small[:, :, :10] == 255).all()
    with VideoSource(video, background="black") as v:
        assert (v.read([0]).frames[0][:, : media.W // 2] == 0).all()


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
def test_decord_refuses_video_with_alpha(tmp_path: Path) -> None:
    video = _png_mov(tmp_path / "alpha.mov", _rgba_frames(3))
    with pytest.raises(SourceError, match="alpha"):
        VideoSource(video, backend="decord").info()


@pytest.mark.skipif(media.FFMPEG is None, reason="needs the ffmpeg command-line tool")
def test_audio_with_cover_art_is_no_video_and_says_so(tmp_path: Path) -> None:
    cover = tmp_path / "cover.png"
    Image.fromarray(media.frame_for_index(1)).save(cover)
    song = tmp_path / "song.m4a"
    media.ffmpeg(
        *("-f", "lavfi", "-i", "sine=d=0.5", "-i", str(cover), "-map", "0:a", "-map", "1:v"),
        *("-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", str(song)),
    )
    with pytest.raises(UnsupportedInputError, match="only a cover picture"):
        VideoSource(song).info()


def test_a_picture_size_change_mid_stream_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """MPEG-TS files joined end to end may change picture size mid-stream: reading a frame
    of the other size is a one-line SourceError naming the file and the sizes (it was a
    bare 'ValueError: could not broadcast input array from shape ...')."""
    parts = []
    for k, size in enumerate(("320x240", "176x144")):
        part = tmp_path / f"part{k}.ts"
        src = f"testsrc2=size={size}:rate=25"
        media.ffmpeg("-f", "lavfi", "-i", src, "-t", "2", "-c:v", "libx264", "-g", "25", str(part))
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    src = VideoSource(joined, backend="pyav")
    with pytest.raises(SourceError, match=r"joined\.ts: the picture size changes mid-stream"):
        src.read([5, src.info().num_frames - 5])
    src.close()
