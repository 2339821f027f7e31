"""Cameras for rendering a 3D object: orbit or Fibonacci sphere, look-at poses, fitted distance.

Conventions: a pose is camera-to-world in the OpenGL/NeRF convention (the camera looks down
its -z axis, +y is up in the image, +x to the right). The object sits at the origin of a
*normalised* frame (centred, radius 1); :func:`to_file_frame` moves a pose back into the
file's coordinates. Pixel (col, row) covers ``[col, col+1) x [row, row+1)``; ``cx = width/2``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from framepipe.errors import ConfigError

CameraMode = Literal["orbit", "sphere"]
UP_AXES = {
    "x": (1.0, 0.0, 0.0),
    "y": (0.0, 1.0, 0.0),
    "z": (0.0, 0.0, 1.0),
    "-x": (-1.0, 0.0, 0.0),
    "-y": (0.0, -1.0, 0.0),
    "-z": (0.0, 0.0, -1.0),
}
# File conventions for the up axis: glTF is y-up by specification; OBJ and PLY assets are
# mostly y-up (graphics tools, scan archives); STL/OFF (CAD, 3D printing, ModelNet) and
# point-cloud formats (lidar, photogrammetry) are mostly z-up.
_UP_BY_EXTENSION = {
    ".glb": "y",
    ".gltf": "y",
    ".obj": "y",
    ".ply": "y",
    ".stl": "z",
    ".off": "z",
    ".pcd": "z",
    ".xyz": "z",
    ".pts": "z",
}
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera's intrinsics in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same field of view at another image size."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def intrinsics_for(width: int, height: int, fov_deg: float) -> Intrinsics:
    """Square pixels; ``fov_deg`` spans the shorter image side."""
    if not 1.0 <= fov_deg <= 150.0:
        raise ConfigError(f"fov_deg ({fov_deg}) must be in [1, 150]")
    f = 0.5 * min(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return Intrinsics(f, f, width / 2.0, height / 2.0, width, height)


def up_vector(up: str, path: Path | None = None) -> tuple[np.ndarray, str, str]:
    """``(unit vector, axis name, how it was chosen)`` for ``up`` (``auto`` or an axis name)."""
    key = str(up).strip().lower()
    if key == "auto":
        ext = path.suffix.lower() if path is not None else ""
        axis = _UP_BY_EXTENSION.get(ext, "y")
        return np.array(UP_AXES[axis]), axis, f"convention for {ext or 'unknown'} files"
    if key.startswith("+"):
        key = key[1:]
    if key not in UP_AXES:
        raise ConfigError(f"up ({up!r}) must be auto, x, y, z, -x, -y or -z")
    return np.array(UP_AXES[key]), key, "chosen"


def front_vector(up: np.ndarray) -> np.ndarray:
    """The object's front for an up axis: +z for y-up (glTF), -y for z-up (Blender, CAD);
    for an up off the axes, the first of those made perpendicular to it."""
    for cand in ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)):
        c = np.array(cand)
        if abs(float(c @ up)) < 0.5:
            c = c - float(c @ up) * up
            return np.asarray(c / np.linalg.norm(c))
    raise AssertionError("no axis is perpendicular to up")  # pragma: no cover


def view_directions(
    mode: CameraMode,
    n: int,
    up: np.ndarray,
    *,
    elevation_deg: float = 20.0,
    azimuth_deg: float = 0.0,
) -> np.ndarray:
    """n unit vectors from the object's centre towards the cameras (n x 3).

    ``orbit``: evenly spaced in azimuth at ``elevation_deg`` above the horizon, view 0 in
    front of the object (rotated by ``azimuth_deg``), azimuth growing counter-clockwise seen
    from above. ``sphere``: a Fibonacci spiral from the top down, evenly spread over the
    sphere.
    """
    if n < 1:
        raise ConfigError(f"num_views ({n}) must be >= 1")
    front = front_vector(up)
    right = np.cross(up, front)
    if mode == "orbit":
        if not -90.0 <= elevation_deg <= 90.0:
            raise ConfigError(f"elevation_deg ({elevation_deg}) must be in [-90, 90]")
        az = np.radians(azimuth_deg) + 2.0 * np.pi * np.arange(n) / n
        el = np.full(n, math.radians(elevation_deg))
        horiz = np.cos(el)[:, None]
        return horiz * (np.cos(az)[:, None] * front + np.sin(az)[:, None] * right) + (
            np.sin(el)[:, None] * up
        )
    if mode == "sphere":
        h = 1.0 - 2.0 * (np.arange(n) + 0.5) / n
        r = np.sqrt(np.clip(1.0 - h * h, 0.0, 1.0))
        az = np.radians(azimuth_deg) + np.arange(n) * _GOLDEN_ANGLE
        return r[:, None] * (np.cos(az)[:, None] * front + np.sin(az)[:, None] * right) + (
            h[:, None] * up
        )
    raise ConfigError(f"cameras ({mode!r}) must be orbit or sphere")


def look_at_rotations(dirs: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world rotations (n x 3 x 3, columns x, y, z) for cameras at ``dirs``
    looking at the origin, image up as close to ``up`` as possible."""
    z = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    fallback = front_vector(up)
    ups = np.where((np.abs(z @ up) > 0.999)[:, None], -np.sign(z @ up)[:, None] * fallback, up)
    x = np.cross(ups, z)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=2)


def fit_distance(
    points: np.ndarray,
    rotations: np.ndarray,
    dirs: np.ndarray,
    intr: Intrinsics,
    fill: float,
) -> float:
    """The smallest camera distance at which ``points`` fit inside ``fill`` of every view.

    For a camera at ``d * dir`` with basis ``x, y``, point ``p`` is at depth ``d - p.dir`` and
    must satisfy ``|p.x| <= t_x (d - p.dir)`` where ``t_x = fill * (width/2) / fx``.
    """
    if not 0.05 <= fill <= 1.0:
        raise ConfigError(f"fill ({fill}) must be in [0.05, 1]")
    tx = fill * (intr.width / 2.0) / intr.fx
    ty = fill * (intr.height / 2.0) / intr.fy
    best = 0.0
    for k in range(len(dirs)):
        rot = rotations[k]
        px = np.abs(dot3(points, rot[:, 0]))
        py = np.abs(dot3(points, rot[:, 1]))
        pz = dot3(points, dirs[k])
        need = np.maximum(pz + px / tx, pz + py / ty)
        best = max(best, float(need.max()), float(pz.max()) + 0.05)
    return best


def poses(dirs: np.ndarray, rotations: np.ndarray, distance: float) -> np.ndarray:
    """n x 4 x 4 camera-to-world poses in the normalised frame."""
    n = len(dirs)
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = rotations
    out[:, :3, 3] = dirs * distance
    return out


def to_file_frame(c2w: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """A pose in the normalised frame (object centred, radius 1) -> the file's coordinates.

    The rotation is unchanged; the camera centre moves to ``centre + scale * t`` (a rigid
    pose: the pinhole image does not change when the whole scene is scaled).
    """
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, 3] = centre + scale * out[..., :3, 3]
    return out


def camera_ray_directions(intr: Intrinsics) -> np.ndarray:
    """Per-pixel ray directions in camera coordinates (H x W x 3, z = -1)."""
    xs = (np.arange(intr.width, dtype=np.float32) + 0.5 - intr.cx) / intr.fx
    ys = -(np.arange(intr.height, dtype=np.float32) + 0.5 - intr.cy) / intr.fy
    d = np.empty((intr.height, intr.width, 3), np.float32)
    d[:, :, 0] = xs[None, :]
    d[:, :, 1] = ys[:, None]
    d[:, :, 2] = -1.0
    return d


def mat3_apply(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``v @ m`` for N x 3 ``v`` and 3 x 3 ``m``, column by column (numpy's matmul takes a
    slow path for such thin matrices: about 10x slower)."""
    m = np.asarray(m, dtype=v.dtype)
    out = np.empty(v.shape, dtype=v.dtype)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    for j in range(3):
        out[..., j] = x * m[0, j] + y * m[1, j] + z * m[2, j]
    return out


def dot3(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``v @ u`` for N x 3 ``v`` and a 3-vector ``u`` (see :func:`mat3_apply`)."""
    return np.asarray(v[..., 0] * u[0] + v[..., 1] * u[1] + v[..., 2] * u[2])


def project(points: np.ndarray, c2w: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, ...]:
    """Pixel coordinates (col, row) and depth along the view axis of world ``points``."""
    rot = c2w[:3, :3].astype(points.dtype)
    t = c2w[:3, 3].astype(points.dtype)
    # world -> camera: R^T (p - t) = p R - t R (row vectors)
    x = dot3(points, rot[:, 0]) - float(t @ rot[:, 0])
    y = dot3(points, rot[:, 1]) - float(t @ rot[:, 1])
    depth = float(t @ rot[:, 2]) - dot3(points, rot[:, 2])
    inv = 1.0 / np.where(depth > 1e-6, depth, 1e-6)
    col = intr.cx + intr.fx * x * inv
    row = intr.cy - intr.fy * y * inv
    return col, row, depth
