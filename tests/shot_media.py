"""Tiny edited videos with known shots, for the shot detector's tests.

Each shot is a crop moving over its own random texture (colour blobs, detail and shapes),
optionally with sensor noise and a changing exposure. :func:`make_edit_video` writes a
160x90 H.264 file (libx264 through PyAV, with B-frames) from a script of shots and
transitions (cuts, dissolves, fades through black, fades in at the start and out at the end)
and returns the ground truth; :func:`grey_ramp` writes a brightness ramp with no content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

W, H, FPS = 160, 90, 25


def texture(seed: int) -> np.ndarray:
    """A 3W x 3H RGB texture, different for every seed."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(base).resize((3 * W, 3 * H), Image.Resampling.BICUBIC))
    detail = rng.integers(-40, 40, (3 * H // 3, 3 * W // 3), dtype=np.int16)
    fine = np.kron(detail, np.ones((3, 3), dtype=np.int16))
    img = Image.fromarray(np.clip(big.astype(np.int16) + fine[..., None], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = int(rng.integers(0, 3 * W)), int(rng.integers(0, 3 * H))
        r = int(rng.integers(6, 24))
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=col)
    return np.asarray(img)


@dataclass
class ShotSpec:
    seed: int
    frames: int
    speed: float = 0.6
    """Pixels per frame of the camera pan (at 160x90)."""
    flash_at: tuple[int, ...] = ()
    """Frames of this shot (counted from its start) shown much brighter."""
    gain: tuple[float | tuple[float, float, float], ...] = ()
    """Exposure of each frame of the shot (a camera's gain, applied in linear light, one for
    all channels or one per R, G, B; 1 when missing): auto-exposure, white balance, a sunset
    or a light switched on, with the content unchanged."""
    noise: float = 0.0
    """Standard deviation (in 8-bit levels) of fresh sensor noise on every frame."""


@dataclass
class EditTruth:
    num_frames: int
    cuts: list[int] = field(default_factory=list)
    """First frame of each shot that starts with a hard cut."""
    gradual: list[tuple[int, int, str]] = field(default_factory=list)
    """``(first, last, kind)`` frames of each dissolve or fade."""
    shots: list[tuple[int, int]] = field(default_factory=list)
    """Clean part ``[a, b)`` of every shot (outside any transition)."""


def _frame(tex: np.ndarray, k: int, speed: float, seed: int) -> np.ndarray:
    ang = (seed * 1.7) % (2 * np.pi)
    x = _bounce(W + speed * k * np.cos(ang), 2 * W)
    y = _bounce(H + speed * k * np.sin(ang) * 0.5, 2 * H)
    return tex[y : y + H, x : x + W]


def _bounce(v: float, span: int) -> int:
    """A camera path that turns back at the texture's edges (no jump)."""
    p = v % (2 * span)
    return int(p if p <= span else 2 * span - p)


def make_edit_video(
    path: Path,
    script: list[ShotSpec | tuple[str, int]],
    *,
    gop: int = 250,
    bframes: int = 3,
    black: int = 4,
    codec: str = "libx264",
) -> EditTruth:
    """Write ``script`` to ``path``: shots separated by ``("cut", 0)``,
    ``("dissolve", L)`` or ``("fade", L)`` (L frames: out, a few black, in). A ``("fade", L)``
    first in the script is a fade in from black (a few black frames, then L frames of ramp),
    last a fade out to black (L frames of ramp, then ``black`` frames). ``codec``:
    ``libx264`` or ``libx265`` (x265's defaults: B-frames that other frames refer to)."""

    frames: list[np.ndarray] = []
    truth = EditTruth(0)
    shots = [s for s in script if isinstance(s, ShotSpec)]
    texs = {s.seed: texture(s.seed) for s in shots}
    consumed = 0
    clean_start = 0
    for pos, item in enumerate(script):
        if isinstance(item, ShotSpec):
            tex = texs[item.seed]
            for k in range(consumed, item.frames):
                img = _frame(tex, k, item.speed, item.seed)
                if k in item.flash_at:
                    img = np.minimum(255, img.astype(np.uint16) * 2 + 90).astype(np.uint8)
                if k < len(item.gain):
                    img = expose(img, item.gain[k])
                if item.noise:
                    img = add_noise(img, item.noise, seed=item.seed * 100003 + k)
                frames.append(img)
            truth.shots.append((clean_start, len(frames)))
            continue
        kind, length = item
        if pos in (0, len(script) - 1):
            _edge_fade(frames, truth, script, pos, length, black)
            clean_start = len(frames)
            continue
        prev = script[pos - 1]
        nxt = script[pos + 1]
        assert isinstance(prev, ShotSpec) and isinstance(nxt, ShotSpec)
        ta, tb = texs[prev.seed], texs[nxt.seed]
        first = len(frames)
        if kind == "cut":
            truth.cuts.append(first)
            consumed = 0
        elif kind == "dissolve":
            for j in range(length):
                a = (j + 1) / (length + 1)
                img = _frame(ta, prev.frames + j, prev.speed, prev.seed) * (1 - a)
                img = img + _frame(tb, j, nxt.speed, nxt.seed) * a
                frames.append(img.astype(np.uint8))
            consumed = length
        elif kind == "fade":
            half = length // 2
            for j in range(half):
                g = 1 - (j + 1) / half
                frames.append(
                    (_frame(ta, prev.frames + j, prev.speed, prev.seed) * g).astype(np.uint8)
                )
            for _ in range(4):
                frames.append(np.zeros((H, W, 3), np.uint8))
            rest = length - half
            for j in range(rest):
                g = (j + 1) / (rest + 1)
                frames.append((_frame(tb, j, nxt.speed, nxt.seed) * g).astype(np.uint8))
            consumed = rest
        else:
            raise ValueError(kind)
        if kind != "cut":
            truth.gradual.append((first, len(frames) - 1, kind))
        clean_start = len(frames)
    truth.num_frames = len(frames)
    write_video(path, frames, gop=gop, bframes=bframes, codec=codec)
    return truth


def _edge_fade(
    frames: list[np.ndarray],
    truth: EditTruth,
    script: list[ShotSpec | tuple[str, int]],
    pos: int,
    length: int,
    black: int,
) -> None:
    """A fade in from black before the first shot, or out to black after the last one."""
    kind = script[pos]
    assert kind[0] == "fade", kind  # type: ignore[index]
    if pos == 0:
        shot = script[1]
        assert isinstance(shot, ShotSpec)
        frames += [np.zeros((H, W, 3), np.uint8)] * black
        tex = texture(shot.seed)
        for j in range(length):
            g = (j + 1) / (length + 1)
            img = _frame(tex, j - length, shot.speed, shot.seed).astype(np.float32) * g
            frames.append(_finish(img, shot, j - length))
        truth.gradual.append((0, len(frames) - 1, "fade"))
        return
    shot = script[pos - 1]
    assert isinstance(shot, ShotSpec)
    first = len(frames)
    tex = texture(shot.seed)
    for j in range(length):
        g = 1 - (j + 1) / length
        img = _frame(tex, shot.frames + j, shot.speed, shot.seed).astype(np.float32) * g
        frames.append(_finish(img, shot, shot.frames + j))
    frames += [np.zeros((H, W, 3), np.uint8)] * black
    truth.gradual.append((first, len(frames) - 1, "fade"))


def _finish(img: np.ndarray, shot: ShotSpec, k: int) -> np.ndarray:
    out = np.clip(img, 0, 255).astype(np.uint8)
    return add_noise(out, shot.noise, seed=shot.seed * 100003 + k) if shot.noise else out


def expose(img: np.ndarray, gain: float | tuple[float, float, float]) -> np.ndarray:
    """``img`` as a camera exposed ``gain`` times longer would see it (a gain per channel
    shifts the white balance): the gain applies to linear light (sRGB decoded and encoded
    again), clipping where it saturates."""
    lin = (img.astype(np.float32) / 255.0) ** 2.2 * np.asarray(gain, np.float32)
    return np.asarray(np.clip(lin ** (1 / 2.2) * 255.0 + 0.5, 0, 255), np.uint8)


def add_noise(img: np.ndarray, sigma: float, *, seed: int) -> np.ndarray:
    """``img`` with Gaussian noise of ``sigma`` levels (its own per frame, reproducible)."""
    rng = np.random.default_rng(seed)
    noisy = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def write_video(
    path: Path,
    frames: list[np.ndarray],
    *,
    gop: int = 250,
    bframes: int = 3,
    codec: str = "libx264",
) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(gop), "bf": str(bframes), "preset": "veryfast", "crf": "20"}
        if codec == "libx265":
            stream.options = {
                "x265-params": f"keyint={gop}:scenecut=0:bframes={bframes}:log-level=error",
                "preset": "veryfast",
                "crf": "20",
            }
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def grey_ramp(
    path: Path, *, cycles: int, period: int, low: int, high: int, noise: float = 0.0
) -> int:
    """A flat grey picture whose level goes ``low`` -> ``high`` -> ``low`` (8-bit levels)
    ``cycles`` times, ``period`` frames each, with sensor noise: a brightness ramp and
    nothing else. Returns the number of frames."""
    frames = []
    for k in range(cycles * period):
        phase = (k % period) / period
        level = low + (high - low) * (1.0 - abs(2.0 * phase - 1.0))
        img = np.full((H, W, 3), round(level), np.uint8)
        frames.append(add_noise(img, noise, seed=k) if noise else img)
    write_video(path, frames)
    return len(frames)


def standard_script() -> list[ShotSpec | tuple[str, int]]:
    """Seven shots: two cuts, a flash, a fade through black, a dissolve, a fast pan, a cut."""
    return [
        ShotSpec(1, 60),
        ("cut", 0),
        ShotSpec(2, 60),
        ("cut", 0),
        ShotSpec(3, 50, flash_at=(25,)),
        ("fade", 16),
        ShotSpec(4, 55),
        ("dissolve", 15),
        ShotSpec(5, 65),
        ("cut", 0),
        ShotSpec(6, 60, speed=6.0),
        ("cut", 0),
        ShotSpec(7, 70),
    ]


def lavfi_frames(graph: str, frames: int, w: int = W, h: int = H) -> np.ndarray:
    """``frames`` RGB frames (``frames x h x w x 3``) of an ffmpeg lavfi graph (ffmpeg's own
    test sources: content the detector was not designed on), scaled to ``w`` x ``h``."""
    import subprocess

    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"{graph},scale={w}:{h},fps={FPS}"]
    cmd += ["-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    out = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3).copy()
    assert len(out) == frames, (graph, len(out))
    return out


def match_tones(pics: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``pics`` with each colour channel's histogram matched to ``target``'s (one mapping,
    from the first frame, for all of them): alike tones, another picture."""
    out = np.empty_like(pics)
    for c in range(3):
        src, dst = pics[0, ..., c].ravel(), target[..., c].ravel()
        src_cdf = np.cumsum(np.bincount(src, minlength=256)) / src.size
        dst_cdf = np.cumsum(np.bincount(dst, minlength=256)) / dst.size
        lut = np.searchsorted(dst_cdf, src_cdf).clip(0, 255).astype(np.uint8)
        out[..., c] = lut[pics[..., c]]
    return out


def waves(
    frames: int,
    *,
    rings: bool,
    period: float,
    speed: float,
    colours: tuple[tuple[int, int, int], tuple[int, int, int]],
) -> np.ndarray:
    """Scrolling sinusoidal stripes (``rings=False``) or rings between two colours."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.hypot(xx - W / 3, yy - H / 2) if rings else xx * 0.8 + yy * 0.6
    c0, c1 = (np.asarray(c, np.float32) for c in colours)
    out = np.empty((frames, H, W, 3), np.uint8)
    for k in range(frames):
        a = 0.5 + 0.5 * np.sin(2 * np.pi * (base - speed * k) / period)
        out[k] = (c0 + (c1 - c0) * a[..., None]).astype(np.uint8)
    return out


def write_vfr_video(path: Path, frames: list[np.ndarray], pts_ms: list[int]) -> None:
    """H.264 (no B-frames) whose frames have the presentation times ``pts_ms``
    (milliseconds): variable frame rate, as a phone or a screen recorder writes it."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": "0", "preset": "veryfast", "crf": "20"}
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for img, t in zip(frames, pts_ms):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
