"""Generated multi-view scenes with known camera poses, for the multi-view tests.

Each view is a tiny image whose colour encodes its camera's azimuth and elevation (so views
from different directions look different) with a white square in its top-left corner (so a
view that comes out rotated or mirrored is caught). Poses are camera-to-world in the
OpenGL/NeRF convention (camera looks down -z, y up), as ``transforms.json`` stores them.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 48, 32


def look_at(eye: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world 4x4 (OpenGL) of a camera at ``eye`` looking at ``target``, z up."""
    e, t = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    f = (t - e) / np.linalg.norm(t - e)
    up = np.array([0.0, 0.0, 1.0]) if abs(f[2]) < 0.99 else np.array([0.0, 1.0, 0.0])
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, e
    return m


def orbit_pose(
    az_deg: float,
    el_deg: float = 20.0,
    radius: float = 4.0,
    target: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """A camera on a sphere about ``target`` at azimuth/elevation (degrees), looking at it."""
    az, el = math.radians(az_deg), math.radians(el_deg)
    d = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    return look_at(np.asarray(target) + radius * d, target)


def view_image(az_deg: float, el_deg: float = 0.0, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """An upright RGB image (h x w x 3) whose colour depends on the viewing direction."""
    w, h = size
    hue = (az_deg % 360.0) / 360.0
    r = int(127 + 120 * math.cos(2 * math.pi * hue))
    g = int(127 + 120 * math.cos(2 * math.pi * (hue - 1 / 3)))
    b = int(127 + 120 * math.cos(2 * math.pi * (hue - 2 / 3)))
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = (r, g, b)
    img[h // 2 :, :] = np.clip(np.array([r, g, b]) * (0.5 + el_deg / 180.0), 0, 255)
    s = max(2, min(w, h) // 4)
    img[:s, :s] = 255  # orientation marker: top-left
    return img


def write_scene(
    folder: Path,
    angles: Sequence[tuple[float, float]],
    *,
    names: Sequence[str] | None = None,
    fmt: str = "png",
    transforms: bool = True,
    file_paths: Sequence[str] | None = None,
    size: tuple[int, int] = (W, H),
) -> list[np.ndarray]:
    """Write one image per (azimuth, elevation) and, optionally, a ``transforms.json``.

    Returns the camera-to-world poses, in the order of ``angles``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = list(names or [f"view_{k:03d}.{fmt}" for k in range(len(angles))])
    poses = []
    frames = []
    for k, ((az, el), name) in enumerate(zip(angles, names)):
        pose = orbit_pose(az, el)
        poses.append(pose)
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(view_image(az, el, size)).save(p)
        fp = file_paths[k] if file_paths is not None else name
        frames.append({"file_path": fp, "transform_matrix": pose.tolist()})
    if transforms:
        meta = {"camera_angle_x": 0.8, "frames": frames}
        (folder / "transforms.json").write_text(json.dumps(meta), encoding="utf-8")
    return poses


def rotmat_to_quat(r: np.ndarray) -> tuple[float, float, float, float]:
    """(w, x, y, z) of a rotation matrix (Shepperd's method), independent of the package."""
    m = np.asarray(r, dtype=np.float64)
    tr = float(np.trace(m))
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    return (float(q[0]), float(q[1]), float(q[2]), float(q[3]))


def c2w_gl_to_colmap(c2w: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """COLMAP's (qvec, tvec) world-to-camera, OpenCV axes, for an OpenGL camera-to-world."""
    cv = np.asarray(c2w) @ np.diag([1.0, -1.0, -1.0, 1.0])
    w2c = np.linalg.inv(cv)
    return rotmat_to_quat(w2c[:3, :3]), tuple(float(v) for v in w2c[:3, 3])


def png16(path: Path, rgb16: np.ndarray) -> None:
    """Write a 16-bit PNG by hand (gray: h x w, or RGB: h x w x 3, uint16)."""
    a = np.asarray(rgb16, dtype=">u2")
    h, w = a.shape[:2]
    colour_type = 2 if a.ndim == 3 else 0
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
