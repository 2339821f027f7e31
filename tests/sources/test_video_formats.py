"""Videos in unusual pixel formats and with unusual streams.

- Full-range video (``yuvj420p``, ``color_range=pc``: MJPEG, many phone recordings) and grey
  video: the shot signal, limited-range YUV for every other video and for images, kept the
  full range, so the same pictures gave the detector more contrast (a false cut in a
  Mandelbrot zoom).
"""

from __future__ import annotations

from pathlib import Path

import media
import numpy as np

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
