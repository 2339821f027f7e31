"""Single-viewpoint scans: tell a one-sided capture from an object, find the sensor, frame
robustly.

A stereo / RGB-D / lidar capture sees its scene from one side only; orbiting it shows the
empty back and far outliers shrink the object. :func:`detect_sensor` says whether a cloud is
such a capture and where its sensor was, from (in this order) an organized PCD
(``HEIGHT > 1``) or a PCD ``VIEWPOINT``, normals that all face one way, or points that the
file's origin sees as one surface within a narrow cone (a capture in camera coordinates).
:func:`robust_bounds` frames a cloud without its far outliers, :func:`cap_directions`
spreads views over a cone around the sensor's side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framepipe.sources.render.check_formats import pcd_header_fields

CAP_DEG = 30.0
"""Half-angle of the cone of views around the sensor's direction."""
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
_MAX_POINTS = 50000
_DEFAULT_VP = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Sensor:
    """Where a one-sided capture was seen from (file coordinates)."""

    forward: np.ndarray
    """Unit vector: the direction the sensor looked (from the sensor into the scene)."""
    up: np.ndarray | None
    """The sensor's image up, when known (a camera frame: -y)."""
    position: np.ndarray | None
    reason: str


@dataclass(frozen=True)
class PcdHeader:
    width: int
    height: int
    points: int
    viewpoint: tuple[float, ...]


def read_pcd_header(path: Path) -> PcdHeader | None:
    """WIDTH, HEIGHT, POINTS and VIEWPOINT of a PCD file (None when not PCD or unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192).decode("ascii", errors="replace")
    except OSError:
        return None
    fields, _ = pcd_header_fields(head.splitlines())
    try:
        width = int(fields["WIDTH"][0])
        height = int(fields.get("HEIGHT", ["1"])[0])
        points = int(fields.get("POINTS", [str(width * height)])[0])
        vp = tuple(float(x) for x in fields.get("VIEWPOINT", [])[:7]) or _DEFAULT_VP
    except (KeyError, IndexError, ValueError):
        return None
    if len(vp) != 7 or not all(math.isfinite(x) for x in vp):
        vp = _DEFAULT_VP
    return PcdHeader(width, height, points, vp)


def _quat_matrix(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    q = np.array([qw, qx, qy, qz], np.float64)
    n = float(np.linalg.norm(q))
    if n < 1e-12:
        return np.eye(3)
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _thin(points: np.ndarray) -> np.ndarray:
    return points[:: max(1, len(points) // _MAX_POINTS)]


def detect_sensor(path: Path, points: np.ndarray, normals: np.ndarray | None) -> Sensor | None:
    """The sensor of a one-sided capture, or None when the cloud looks like a whole object."""
    pts = _thin(points)
    if len(pts) < 10:
        return None
    if path.suffix.lower() == ".pcd":
        head = read_pcd_header(path)
        if head is not None:
            vp = head.viewpoint
            default_vp = vp == _DEFAULT_VP
            if head.height > 1 or not default_vp:
                why = (
                    f"organized cloud {head.width}x{head.height}"
                    if head.height > 1
                    else "a PCD VIEWPOINT"
                )
                vps = " ".join(f"{x:g}" for x in vp)
                sensor = _sensor_at(
                    pts, np.array(vp[:3]), _quat_matrix(*vp[3:]), f"{why} with VIEWPOINT {vps}"
                )
                if sensor is not None:
                    return sensor
    if normals is not None and len(normals) == len(points):
        s = _one_way_normals(_thin(normals))
        if s is not None:
            return s
    return _seen_from_origin(pts)


def _sensor_at(pts: np.ndarray, position: np.ndarray, rot: np.ndarray, why: str) -> Sensor | None:
    """A camera-frame sensor (looks down its +z, image up -y) at ``position``, turned by
    ``rot``; when most points are not in front of it, it looks at their mean direction;
    None when they surround it (a panoramic lidar scan: there is no side to view from)."""
    forward = rot @ np.array([0.0, 0.0, 1.0])
    up = rot @ np.array([0.0, -1.0, 0.0])
    rel = pts - position
    dist = np.linalg.norm(rel, axis=1)
    unit = rel[dist > 1e-12] / dist[dist > 1e-12, None]
    mean = unit.mean(axis=0) if len(unit) else np.zeros(3)
    if float(np.linalg.norm(mean)) < 0.5:
        return None
    if float(np.mean(rel @ forward > 0)) < 0.9:
        forward = mean / np.linalg.norm(mean)
        why += " (points not in front of it: looking at their mean direction)"
    return Sensor(forward, up, position, why)


def _one_way_normals(normals: np.ndarray) -> Sensor | None:
    n = normals[np.linalg.norm(normals, axis=1) > 0.5]
    if len(n) < 10:
        return None
    mean = n.mean(axis=0)
    length = float(np.linalg.norm(mean))
    if length < 0.5:
        return None
    m = mean / length
    share = float(np.mean(n @ m > 0.0))
    if share < 0.95:
        return None
    return Sensor(-m, None, None, f"{share:.0%} of the normals face one way")


def _seen_from_origin(pts: np.ndarray) -> Sensor | None:
    """A capture in camera coordinates: the origin (the sensor) sees the points in a narrow
    cone and as one surface (each direction meets one depth, not a front and a back)."""
    dist = np.linalg.norm(pts, axis=1)
    ok = dist > 1e-9
    if ok.sum() < 10:
        return None
    d = pts[ok] / dist[ok, None]
    mean = d.mean(axis=0)
    if np.linalg.norm(mean) < 1e-9:
        return None
    m = mean / np.linalg.norm(mean)
    cos = d @ m
    half = math.degrees(math.acos(float(np.clip(np.percentile(cos, 2), -1, 1))))
    if half > 60.0:
        return None
    lo, hi = robust_bounds(pts)
    extent = float(np.linalg.norm(hi - lo))
    if extent <= 0 or float(np.percentile(dist[ok], 2)) < 0.05 * extent:
        return None  # the origin is inside or at the object
    if float(np.median(dist[ok])) > 20.0 * extent:
        return None  # far away (geo-referenced coordinates): the origin is no sensor
    # bin by direction: a depth map has one depth per bin (small spread), an object seen
    # from outside a front and a back surface (a spread of its thickness)
    a = np.cross(m, [1.0, 0.0, 0.0] if abs(m[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(m, a)
    u, v = d @ a / cos, d @ b / cos
    bins = 24
    span = max(float(np.abs(u).max()), float(np.abs(v).max()), 1e-9)
    iu = np.clip(((u / span + 1) * 0.5 * bins).astype(np.int64), 0, bins - 1)
    iv = np.clip(((v / span + 1) * 0.5 * bins).astype(np.int64), 0, bins - 1)
    key = iu * bins + iv
    depth = dist[ok]
    order = np.lexsort((depth, key))
    key, depth = key[order], depth[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    full = counts >= 4
    if full.sum() < 8:
        return None
    ends = starts + counts - 1
    spread = (depth[ends] - depth[starts])[full]
    frac = float(np.median(spread)) / extent
    if frac > 0.08:
        return None
    forward = m
    up = None
    why = f"the origin sees the points within {half:.0f} degrees as one surface"
    if forward[2] > math.cos(math.radians(40.0)):
        up = np.array([0.0, -1.0, 0.0])
        why += " (camera coordinates: z forward, y down)"
    return Sensor(forward, up, np.zeros(3), why)


def robust_bounds(points: np.ndarray, q: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``q`` and ``100 - q`` percentiles of ``points``."""
    pts = _thin(points)
    return np.percentile(pts, q, axis=0), np.percentile(pts, 100.0 - q, axis=0)


def inliers(points: np.ndarray) -> np.ndarray | None:
    """A mask of the points that are not far outliers (None when there are none).

    A point is a far outlier when it lies further from the 1-99 percentile box than the
    box's diagonal; at most 5% of the points may be left out.
    """
    lo, hi = robust_bounds(points)
    diag = float(np.linalg.norm(hi - lo))
    if diag <= 0:
        return None
    gap = np.linalg.norm(np.maximum(lo - points, 0) + np.maximum(points - hi, 0), axis=1)
    keep = gap <= 0.5 * diag
    out = int((~keep).sum())
    if out == 0 or out > 0.05 * len(points):
        return None
    return keep


def cap_directions(
    n: int, axis: np.ndarray, up: np.ndarray, cap_deg: float = CAP_DEG
) -> np.ndarray:
    """n unit vectors over a cone of half-angle ``cap_deg`` around ``axis`` (a Fibonacci
    spiral from its centre: view 0 is ``axis`` itself), azimuth 0 towards ``up``."""
    axis = axis / np.linalg.norm(axis)
    side = np.cross(up, axis)
    if np.linalg.norm(side) < 1e-9:
        side = np.cross([1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0], axis)
    side /= np.linalg.norm(side)
    top = np.cross(axis, side)
    cos_max = math.cos(math.radians(cap_deg))
    i = np.arange(n, dtype=np.float64)
    h = 1.0 - (1.0 - cos_max) * (i / max(1, n - 1))
    r = np.sqrt(np.clip(1.0 - h * h, 0.0, 1.0))
    az = i * _GOLDEN_ANGLE
    return h[:, None] * axis + r[:, None] * (np.cos(az)[:, None] * top + np.sin(az)[:, None] * side)


def is_axis(v: np.ndarray) -> str | None:
    """The axis name (``x``, ``-y`` ...) of a unit vector along an axis, else None."""
    k = int(np.abs(v).argmax())
    if abs(abs(float(v[k])) - 1.0) > 1e-6:
        return None
    return ("-" if v[k] < 0 else "") + "xyz"[k]


def frame_and_sensor(
    path: Path,
    kind: str,
    points: np.ndarray,
    normals: np.ndarray | None,
    placement: str,
    notes: list[str],
) -> tuple[np.ndarray, Sensor | None]:
    """The points to frame (a cloud without its far outliers) and the sensor of a one-sided
    capture (None for a whole object, a mesh, or ``placement="around"``)."""
    if kind != "points":
        return points, None
    keep = inliers(points)
    frame = points
    if keep is not None:
        frame = points[keep]
        notes.append(f"{int((~keep).sum())} far outlier point(s) left out of the framing")
        if normals is not None and len(normals) == len(points):
            normals = normals[keep]
    if placement == "around":
        return frame, None
    sensor = detect_sensor(path, frame, normals)
    if sensor is None and placement == "sensor":
        notes.append("placement=sensor: no sign of a one-sided capture, sensor at the origin")
        mean = frame.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        fwd = mean / norm if norm > 1e-12 else np.array([0.0, 0.0, 1.0])
        sensor = Sensor(fwd, None, np.zeros(3), "placement=sensor (asked for)")
    return frame, sensor


def around_reason(kind: str, placement: str) -> str:
    if placement == "around":
        return "placement=around (asked for)"
    if kind != "points":
        return "a mesh: seen from all sides"
    return (
        "no sign of a one-sided capture (not organized, no VIEWPOINT, normals and points "
        "all around)"
    )
