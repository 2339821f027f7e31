"""``up=auto``: which way is up for a model whose file format does not say.

glTF is y-up by specification. OBJ, PLY, STL and OFF have no convention, so a fixed guess
lays half of them on their side; for those the object's shape decides: it stands on its
most stable resting face, the face of its convex hull that its centre of mass projects into
and that covers the largest solid angle seen from the centre of mass (the pose it most
likely comes to rest in when dropped). Only a clear winner is taken (a cube or a sphere has
none; a box's two largest faces tie, but on one axis: it lies on them); otherwise the format's
usual axis stays.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

import framepipe.sources.render.cameras as cams
from framepipe.sources.render.geometry import Geometry, used_points
from framepipe.sources.render.scans import Sensor, is_axis

log = logging.getLogger(__name__)

SHAPE_FORMATS = frozenset({".obj", ".ply", ".stl", ".off"})
"""Formats without an up-axis convention: their meshes are stood up by shape."""
MIN_SHARE = 0.03
"""The resting face must cover at least this share of the sphere of directions ..."""
MARGIN = 1.3
"""... and this many times the best face on another axis (or off the axes)."""
_MAX_POINTS = 4000
"""Points the convex hull is built from (an even stride, plus the extremes per axis)."""


def choose_up(
    up: str, path: Path, g: Geometry, sensor: Sensor | None
) -> tuple[np.ndarray, str | list[float], str]:
    """``(unit up vector, axis name (or the vector), how it was chosen)``."""
    vec, axis, source = cams.up_vector(up, path)
    if str(up).strip().lower() != "auto":
        return vec, axis, source
    if sensor is not None and sensor.up is not None:
        u = sensor.up / np.linalg.norm(sensor.up)
        name = is_axis(u)
        return u, name or [round(float(c), 6) for c in u], "the capture's image up (sensor)"
    ext = path.suffix.lower()
    if g.kind == "mesh" and ext in SHAPE_FORMATS:
        rest = resting_up(g)
        if rest is not None:
            name, share, total, second = rest
            why = (
                f"shape: resting face covers {share:.0%} of directions, its axis {total:.0%} "
                f"(next {second:.0%})"
            )
            return np.array(cams.UP_AXES[name]), name, f"{why}; {ext} files have no up convention"
        source += " (shape gives no clear resting face)"
    return vec, axis, source


def resting_up(g: Geometry) -> tuple[str, float, float, float] | None:
    """The up axis (the nearest of x, -x, y, -y, z, -z) of the mesh's most stable
    resting pose, the solid-angle share of its face, of its axis (both faces) and of the best
    face on another axis; None without a clear winner.

    The largest face must clearly beat the faces on the other axes only: the face opposite
    it gives the same axis (a box rests on either of its two largest faces). Up is the side
    that clearly wins (a bottle's base, not its neck), else the positive one, the sign of the
    formats' conventions (one guessed from float noise would change views for nothing).
    """
    pts = used_points(g)
    if len(pts) < 4:
        return None
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2.0
    scale = float(np.abs(pts - centre).max())
    if scale <= 0:
        return None
    com = _centre_of_mass(g, centre, scale)
    sample = pts[:: max(1, len(pts) // _MAX_POINTS)]
    extremes = pts[np.r_[pts.argmin(axis=0), pts.argmax(axis=0)]]
    hull = _hull((np.concatenate([sample, extremes]) - centre) / scale)
    if hull is None:
        return None
    best: dict[str, float] = {"": 0.0}  # the largest stable face per signed axis ("": off axis)
    for normal, share in _facets(*hull, com):
        name = is_axis(_snap(-normal)) or ""
        best[name] = max(best.get(name, 0.0), share)
    top, share = max(
        ((n, s) for n, s in best.items() if n), key=lambda ns: ns[1], default=("", 0.0)
    )
    axis = top.lstrip("-")
    second = max(s for n, s in best.items() if not n or n.lstrip("-") != axis)
    if share < MIN_SHARE or share < MARGIN * second:
        return None  # a cube, a sphere: no clear resting axis
    plus, minus = best.get(axis, 0.0), best.get("-" + axis, 0.0)
    name, share = ("-" + axis, minus) if minus >= MARGIN * plus else (axis, plus)
    return name, share, plus + minus, second


def _snap(v: np.ndarray, max_deg: float = 20.0) -> np.ndarray:
    """``v`` snapped to the nearest axis when within ``max_deg``, else unchanged."""
    k = int(np.abs(v).argmax())
    if abs(float(v[k])) < np.cos(np.radians(max_deg)):
        return v
    out = np.zeros(3)
    out[k] = np.sign(v[k])
    return out


def _centre_of_mass(g: Geometry, centre: np.ndarray, scale: float) -> np.ndarray:
    """Of the solid when the mesh closes a volume, else of its surface (normalised frame)."""
    v = (g.vertices - centre) / scale
    tri = v[g.triangles]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    with np.errstate(all="ignore"):
        vol6 = np.einsum("ij,ij->i", a, np.cross(b, c))
        total = float(vol6.sum())
        area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
        surface = float(area.sum())
        if abs(total) > 0.02 * max(surface, 1e-12) ** 1.5:
            return np.asarray((vol6[:, None] * (a + b + c)).sum(axis=0) / (4.0 * total))
        if surface > 0:
            return np.asarray((area[:, None] * (a + b + c)).sum(axis=0) / (3.0 * surface))
    return np.zeros(3)


def _hull(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    import open3d

    o3d: Any = open3d
    try:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(pts)))
        mesh, _ = pc.compute_convex_hull()
    except RuntimeError:  # flat or degenerate: qhull refuses
        return None
    hv = np.asarray(mesh.vertices, np.float64)
    ht = np.asarray(mesh.triangles, np.int64)
    if len(ht) < 4:
        return None
    return hv, ht


def _facets(hv: np.ndarray, ht: np.ndarray, com: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """``(outward unit normal, share of the sphere seen from com)`` per stable hull facet
    (coplanar hull triangles merged; stable: com projects inside the facet)."""
    a, b, c = hv[ht[:, 0]], hv[ht[:, 1]], hv[ht[:, 2]]
    n = np.cross(b - a, c - a)
    length = np.linalg.norm(n, axis=1)
    ok = length > 1e-12
    a, b, c, n = a[ok], b[ok], c[ok], n[ok] / length[ok, None]
    inside = hv.mean(axis=0)
    n = np.where((np.einsum("ij,ij->i", n, a - inside) < 0)[:, None], -n, n)
    # solid angle of each triangle seen from com (Van Oosterom & Strackee)
    ra, rb, rc = a - com, b - com, c - com
    la, lb, lc = (np.linalg.norm(r, axis=1) for r in (ra, rb, rc))
    num = np.abs(np.einsum("ij,ij->i", ra, np.cross(rb, rc)))
    den = (
        la * lb * lc
        + np.einsum("ij,ij->i", ra, rb) * lc
        + np.einsum("ij,ij->i", ra, rc) * lb
        + np.einsum("ij,ij->i", rb, rc) * la
    )
    omega = 2.0 * np.arctan2(num, den) / (4.0 * np.pi)
    # com projected onto each triangle's plane: inside it?
    d = np.einsum("ij,ij->i", com - a, n)
    p = com - d[:, None] * n
    inside_tri = _in_triangle(p, a, b, c, n)
    offset = np.einsum("ij,ij->i", a, n)
    facets: list[tuple[np.ndarray, float]] = []
    # coplanar hull triangles share a normal and an offset: grouped by rounding both, on
    # two grids half a cell apart (a face split by one grid's cell boundary is whole on
    # the other); a facet found twice has the same up axis, so the duplicates do no harm
    for shift in (0.0, 0.5):
        q = np.floor(np.c_[n / 2e-3, offset / 1e-3] + shift).astype(np.int64) + 4096
        key = ((q[:, 0] * 8192 + q[:, 1]) * 8192 + q[:, 2]) * 8192 + q[:, 3]
        _, label = np.unique(key, return_inverse=True)
        label = label.reshape(-1)
        count = int(label.max()) + 1
        share = np.bincount(label, weights=omega, minlength=count)
        stable = np.bincount(label, weights=inside_tri.astype(np.float64), minlength=count) > 0
        mean_n = np.stack(
            [np.bincount(label, weights=n[:, j] * omega, minlength=count) for j in range(3)], 1
        )
        # smaller faces can neither win nor stop a winner (see resting_up)
        for k in np.flatnonzero(stable & (share >= MIN_SHARE / MARGIN)):
            length = float(np.linalg.norm(mean_n[k]))
            if length > 0:
                facets.append((mean_n[k] / length, float(share[k])))
    return facets


def _in_triangle(
    p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, n: np.ndarray
) -> np.ndarray:
    tol = -1e-9
    e0 = np.einsum("ij,ij->i", np.cross(b - a, p - a), n)
    e1 = np.einsum("ij,ij->i", np.cross(c - b, p - b), n)
    e2 = np.einsum("ij,ij->i", np.cross(a - c, p - c), n)
    return np.asarray((e0 >= tol) & (e1 >= tol) & (e2 >= tol))
