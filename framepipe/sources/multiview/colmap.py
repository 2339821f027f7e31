"""COLMAP model files (``images.txt`` / ``cameras.txt`` and their binary twins) read into
plain records, and COLMAP's world-to-camera poses turned into camera-to-world OpenGL ones.

Used by :mod:`framepipe.sources.multiview.poses`, which matches the images to files on disk. A file
that cannot be parsed raises :class:`~framepipe.errors.SourceError` naming the file; an
``images.bin`` whose image count cannot fit the file is refused before any record is read.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framepipe.errors import SourceError

log = logging.getLogger(__name__)

_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])

# COLMAP camera models: id -> (name, number of parameters); the first parameters are
# f (or fx, fy) then cx, cy for all of them.
_COLMAP_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
_SINGLE_FOCAL = {"SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE"}
_SINGLE_FOCAL |= {"RADIAL_FISHEYE"}
# The smallest image record in images.bin: id, qvec, tvec, camera id (64 bytes), an empty
# name's NUL byte, and a zero count of 2D points (8 bytes).
_MIN_IMAGE_BYTES = 64 + 1 + 8


def quat_to_rotmat(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion, Hamilton convention."""
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise ValueError(f"rotation quaternion {_fmt(q)} holds non-finite numbers")
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError("zero quaternion")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def colmap_to_c2w(qvec: Sequence[float], tvec: Sequence[float]) -> np.ndarray:
    """COLMAP world-to-camera (quaternion, translation; OpenCV axes) -> camera-to-world
    4x4 in the OpenGL convention. The camera centre is ``-R^T t``."""
    t = np.asarray(tvec, dtype=np.float64)
    if t.shape != (3,):
        raise ValueError(f"translation must have 3 numbers, got {t.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"translation {_fmt(t)} holds non-finite numbers")
    r = quat_to_rotmat(*qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = r.T
    c2w[:3, 3] = -r.T @ t
    return c2w @ _OPENCV_TO_OPENGL


def _fmt(a: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in a) + ")"


@dataclass(frozen=True)
class ColmapImage:
    image_id: int
    camera_id: int
    name: str
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]


def _is_int(s: str) -> bool:
    return s.isdigit()


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _looks_like_image_line(tok: list[str]) -> bool:
    return (
        len(tok) >= 10
        and _is_int(tok[0])
        and _is_int(tok[8])
        and all(_is_float(t) for t in tok[1:8])
    )


def read_colmap_images_txt(path: Path) -> list[ColmapImage]:
    """Parse ``images.txt``: per image a line ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``
    followed by its 2D points line (possibly empty). Hand-written files without the points
    lines are accepted too."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise SourceError(path, f"cannot read ({exc.strerror or exc})") from exc
    out: list[ColmapImage] = []
    expect_points = False
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        tok = line.split()
        if expect_points:
            expect_points = False
            # The line after an image line lists its 2D points (x y point3D_id)*; it may be
            # empty. A line that is itself an image line means the points line was left out.
            if not _looks_like_image_line(tok):
                if len(tok) % 3 != 0:
                    raise SourceError(
                        path, f"line {lineno}: expected 2D points (x y id)*, got {len(tok)} values"
                    )
                continue
        if not tok:
            continue
        if not _looks_like_image_line(tok):
            raise SourceError(
                path,
                f"line {lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', "
                f"got {line[:60]!r}",
            )
        q = tuple(float(t) for t in tok[1:5])
        t = tuple(float(v) for v in tok[5:8])
        name = " ".join(tok[9:])
        out.append(ColmapImage(int(tok[0]), int(tok[8]), name, q, t))  # type: ignore[arg-type]
        expect_points = True
    return out


def read_colmap_cameras_txt(path: Path) -> dict[int, dict[str, float]]:
    """Parse ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`` -> intrinsics."""
    out: dict[int, dict[str, float]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise SourceError(path, f"cannot read ({exc.strerror or exc})") from exc
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 5 or not _is_int(tok[0]) or not all(_is_float(t) for t in tok[2:]):
            raise SourceError(
                path, f"line {lineno}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...'"
            )
        params = [float(t) for t in tok[4:]]
        out[int(tok[0])] = _colmap_intrinsics(tok[1], float(tok[2]), float(tok[3]), params)
    return out


def _colmap_intrinsics(model: str, w: float, h: float, params: list[float]) -> dict[str, float]:
    intr: dict[str, float] = {"width": w, "height": h}
    if model.upper() in _SINGLE_FOCAL and len(params) >= 3:
        intr.update(fx=params[0], fy=params[0], cx=params[1], cy=params[2])
    elif len(params) >= 4:
        intr.update(fx=params[0], fy=params[1], cx=params[2], cy=params[3])
    return intr


def read_colmap_images_bin(path: Path) -> list[ColmapImage]:
    """Parse COLMAP's binary ``images.bin``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(path, f"cannot read ({exc.strerror or exc})") from exc
    out: list[ColmapImage] = []
    if len(data) < 8:
        raise SourceError(path, f"truncated or not a COLMAP images.bin ({len(data)} bytes)")
    (count,) = struct.unpack_from("<Q", data, 0)
    room = (len(data) - 8) // _MIN_IMAGE_BYTES
    if count > room:  # a garbage count: fail now, not after walking the whole file
        raise SourceError(
            path,
            f"claims {count} images but its {len(data)} bytes hold at most {room} "
            "(truncated or not a COLMAP images.bin)",
        )
    pos = 8
    try:
        for _ in range(count):
            image_id, qw, qx, qy, qz, tx, ty, tz, cam = struct.unpack_from("<i7di", data, pos)
            pos += 64
            end = data.index(b"\x00", pos)
            name = data[pos:end].decode("utf-8", errors="replace")
            pos = end + 1
            (npts,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            if npts > (len(data) - pos) // 24:
                raise SourceError(
                    path,
                    f"image {name!r} (IMAGE_ID {image_id}) claims {npts} 2D points, more than "
                    f"the {len(data) - pos} bytes left hold (truncated or not a COLMAP images.bin)",
                )
            pos += 24 * npts
            out.append(ColmapImage(image_id, cam, name, (qw, qx, qy, qz), (tx, ty, tz)))
    except (struct.error, ValueError) as exc:
        raise SourceError(path, f"truncated or not a COLMAP images.bin ({exc})") from exc
    if pos > len(data):
        raise SourceError(path, "truncated COLMAP images.bin")
    return out


def read_colmap_cameras_bin(path: Path) -> dict[int, dict[str, float]]:
    """Parse COLMAP's binary ``cameras.bin``."""
    try:
        data = path.read_bytes()
        (count,) = struct.unpack_from("<Q", data, 0)
        if count > (len(data) - 8) // 24:
            raise ValueError(f"claims {count} cameras, more than its {len(data)} bytes hold")
        pos = 8
        out: dict[int, dict[str, float]] = {}
        for _ in range(count):
            cam_id, model_id, w, h = struct.unpack_from("<iiQQ", data, pos)
            pos += 24
            name, nparams = _COLMAP_MODELS.get(model_id, ("", -1))
            if nparams < 0:
                raise ValueError(f"unknown camera model id {model_id}")
            params = list(struct.unpack_from(f"<{nparams}d", data, pos))
            pos += 8 * nparams
            out[cam_id] = _colmap_intrinsics(name, float(w), float(h), params)
    except OSError as exc:
        raise SourceError(path, f"cannot read ({exc.strerror or exc})") from exc
    except (struct.error, ValueError) as exc:
        raise SourceError(path, f"truncated or not a COLMAP cameras.bin ({exc})") from exc
    return out
