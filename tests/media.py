"""Test media whose every frame carries its own index in its pixels.

A frame is a 4 x 3 grid of big cells (40 x 40 pixels at 160 x 120). The top-left cell is
always white and the top-right cell always black (orientation markers: a frame that comes out
rotated or mirrored does not read back); the ten other cells hold the frame index as a binary
number, one bit per cell. Big flat cells survive any sane compression, so :func:`read_index`
recovers the index of every decoded frame and exactness is asserted, not assumed.

Everything is encoded with PyAV (its wheels bundle libx264, libvpx, mpeg4 and mjpeg), so the
tests need no ffmpeg command-line tool.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

W, H = 160, 120
COLS, ROWS = 4, 3
MARK_WHITE = 0  # cell number (row-major) that is always white
MARK_BLACK = COLS - 1  # cell number that is always black
BIT_CELLS = [c for c in range(COLS * ROWS) if c not in (MARK_WHITE, MARK_BLACK)]
MAX_INDEX = 2 ** len(BIT_CELLS) - 1


def frame_for_index(i: int, width: int = W, height: int = H) -> np.ndarray:
    """An upright RGB frame (height x width x 3, uint8) that encodes ``i``."""
    if not 0 <= i <= MAX_INDEX:
        raise ValueError(f"index {i} out of range 0..{MAX_INDEX}")
    cw, ch = width // COLS, height // ROWS
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:, :] = (40, 40, 40)
    for cell in range(COLS * ROWS):
        r, c = divmod(cell, COLS)
        if cell == MARK_WHITE:
            on = True
        elif cell == MARK_BLACK:
            on = False
        else:
            on = bool((i >> BIT_CELLS.index(cell)) & 1)
        img[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw] = 235 if on else 16
    return img


def read_index(img: np.ndarray) -> int:
    """The index a decoded frame carries, or -1 when its markers are wrong (rotated, garbage)."""
    height, width = img.shape[:2]
    cw, ch = width // COLS, height // ROWS
    gray = img.astype(np.float32).mean(axis=2)

    def bit(cell: int) -> bool | None:
        r, c = divmod(cell, COLS)
        y0, x0 = r * ch + ch // 4, c * cw + cw // 4
        v = float(gray[y0 : y0 + ch // 2, x0 : x0 + cw // 2].mean())
        if v > 170:
            return True
        if v < 80:
            return False
        return None

    if bit(MARK_WHITE) is not True or bit(MARK_BLACK) is not False:
        return -1
    value = 0
    for k, cell in enumerate(BIT_CELLS):
        b = bit(cell)
        if b is None:
            return -1
        value |= int(b) << k
    return value


def encode_video(
    path: Path,
    *,
    codec: str = "libx264",
    num_frames: int = 90,
    fps: int = 30,
    pts_ms: Sequence[int] | None = None,
    gop: int = 30,
    bframes: int = 0,
    rotation: int = 0,
    options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
    width: int = W,
    height: int = H,
) -> Path:
    """Encode frames ``0 .. num_frames-1`` (see :func:`frame_for_index`) into ``path``.

    ``pts_ms`` gives each frame's presentation time in milliseconds (variable frame rate);
    ``rotation`` (0/90/180/270, counter-clockwise) is written as the container's display
    matrix, with the stored pictures turned so that applying it shows them upright.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)
        stream.width, stream.height = stored_w, stored_h
        stream.pix_fmt = pix_fmt
        cc = stream.codec_context
        cc.gop_size = gop
        if bframes and codec != "libx264":
            cc.max_b_frames = bframes
        opts = dict(options or {})
        if codec == "libx264":
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
            if bframes:
                params += ":b-adapt=0:b-pyramid=normal"
            opts.setdefault("x264-params", params)
            opts.setdefault("crf", "16")
        stream.options = opts
        if pts_ms is not None:
            tb = Fraction(1, 1000)
            cc.time_base = tb
            stream.time_base = tb
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            upright = frame_for_index(i, width, height)
            stored = np.ascontiguousarray(np.rot90(upright, k=-(rotation // 90)))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            if pts_ms is not None:
                frame.pts = int(pts_ms[i])
                frame.time_base = Fraction(1, 1000)
            else:
                frame.pts = i
                frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# -- the formats the acceptance list names --------------------------------------------------
def h264_mp4(path: Path, num_frames: int = 90, **kw: object) -> Path:
    """H.264 in MP4 with B-frames (pyramid), a keyframe every 30 frames."""
    return encode_video(path, codec="libx264", num_frames=num_frames, bframes=3, **kw)  # type: ignore[arg-type]


def mpeg4_avi(path: Path, num_frames: int = 90) -> Path:
    """MPEG-4 Part 2 in AVI with B-frames (decoder output order differs from file order)."""
    return encode_video(
        path, codec="mpeg4", num_frames=num_frames, bframes=2, options={"qscale": "3"}
    )


def vp8_webm(path: Path, num_frames: int = 90) -> Path:
    """VP8 in WebM, with alternate reference (invisible) frames."""
    return encode_video(
        path,
        codec="libvpx",
        num_frames=num_frames,
        options={"crf": "10", "b": "1M", "auto-alt-ref": "1", "lag-in-frames": "16"},
    )


def vp9_webm(path: Path, num_frames: int = 90) -> Path:
    """VP9 in WebM (alternate reference frames packed in superframes)."""
    return encode_video(
        path,
        codec="libvpx-vp9",
        num_frames=num_frames,
        options={"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    )


def mjpeg_avi(path: Path, num_frames: int = 60) -> Path:
    """Motion JPEG in AVI (every frame a keyframe)."""
    return encode_video(
        path, codec="mjpeg", num_frames=num_frames, pix_fmt="yuvj420p", options={"q:v": "3"}
    )


def vfr_pts_ms(num_frames: int) -> list[int]:
    """Irregular presentation times: gaps of 20, 40, 100 and 33 ms in a fixed pattern."""
    gaps = [20, 40, 100, 33, 33, 60]
    t, out = 0, []
    for i in range(num_frames):
        out.append(t)
        t += gaps[i % len(gaps)]
    return out


def vfr_mp4(path: Path, num_frames: int = 60) -> Path:
    """Variable frame rate H.264 MP4 (no B-frames: x264 needs them off for arbitrary pts)."""
    return encode_video(path, codec="libx264", num_frames=num_frames, pts_ms=vfr_pts_ms(num_frames))


def rotated_mp4(path: Path, rotation: int, num_frames: int = 40) -> Path:
    """H.264 MP4 stored sideways with a display matrix that turns it upright."""
    return encode_video(path, codec="libx264", num_frames=num_frames, bframes=2, rotation=rotation)


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An AAC audio-only MP4 (no video stream)."""
    import av

    rate = 16000
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        n = int(seconds * rate)
        t = np.arange(n) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def truncated_copy(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``src``'s bytes (a download cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def random_frames(n: int, seed: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``n`` random RGB frames of ``size`` (height, width), the same for the same seed."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


FFMPEG = shutil.which("ffmpeg")
"""The ffmpeg command-line tool (None when absent: the tests that need it skip)."""


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg command line quietly (it must be there)."""
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def ffmpeg_encode(path: Path, args: list[str], n: int, fps: int = 25) -> Path:
    """Self-indexing frames 0..n-1 (W x H, ``fps``) piped to the ffmpeg command line,
    encoded with ``args``."""
    raw = b"".join(frame_for_index(i).tobytes() for i in range(n))
    head = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(fps), "-i", "-"]
    assert FFMPEG is not None
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *head, *args, str(path)]
    subprocess.run(cmd, input=raw, check=True)
    return path
