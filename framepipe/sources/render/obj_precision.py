"""OBJ files in world coordinates (CAD, scans: a model 1e6 units from the origin) keep their
detail: Assimp reads positions as float32, which near 1e6 are 0.06 apart and near 1e8 are 8
apart, so a small object far out collapses into a few points. The file's ``v`` lines are read
in float64, a copy moved to the origin is read by Open3D for the positions, and the offset is
added back in float64."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FAR_RATIO = 10.0
"""Recentre when the centre is further from the origin than this many times the extent."""


def obj_vertex(raw: bytes) -> tuple[float, float, float] | None:
    """The position of an OBJ ``v x y z`` line; None for any other line, or a bad one."""
    if not raw.startswith((b"v ", b"v\t")):
        return None
    tok = raw.split()
    if len(tok) < 4:
        return None
    try:
        return float(tok[1]), float(tok[2]), float(tok[3])
    except ValueError:
        return None


def obj_vertices(path: Path) -> np.ndarray:
    """The ``v x y z`` lines of an OBJ file (float64 N x 3), 24 bytes a vertex held."""
    with open(path, "rb") as fh:
        lines = (obj_vertex(raw) for raw in fh)
        flat = np.fromiter((c for v in lines if v is not None for c in v), np.float64)
    return flat.reshape(-1, 3)


def _far_centre(lo: np.ndarray, hi: np.ndarray, ratio: float) -> np.ndarray | None:
    """The centre of the box ``lo``..``hi`` when it lies further from the origin than
    ``ratio`` times the box's extent, else None."""
    centre = (lo + hi) / 2.0
    extent = float((hi - lo).max())
    return centre if float(np.abs(centre).max()) > ratio * max(extent, 1e-300) else None


def _far(vertex_sets: list[np.ndarray]) -> bool:
    """Whether points (any precision) may lie far out for :func:`obj_centre_if_far`: float32
    may round the extent to zero far out, so the test is made at half its ratio."""
    sets = [v.reshape(-1, 3) for v in vertex_sets if v.size]
    if not sets:
        return False
    lo = np.min([v.min(axis=0) for v in sets], axis=0)
    hi = np.max([v.max(axis=0) for v in sets], axis=0)
    return _far_centre(lo, hi, 0.5 * FAR_RATIO) is not None


def obj_centre_if_far(path: Path) -> np.ndarray | None:
    """The centre (float64) of the OBJ's finite ``v`` positions when they lie far from the
    origin for their extent; None when float32 holds them well enough (or there are none)."""
    v = obj_vertices(path)
    v = v[np.isfinite(v).all(axis=1)]
    return _far_centre(v.min(axis=0), v.max(axis=0), FAR_RATIO) if len(v) else None


def _shifted_copy(path: Path, centre: np.ndarray, out: Path) -> None:
    """``path`` with every ``v x y z`` moved by ``-centre`` (all other bytes unchanged)."""
    with open(path, "rb") as src, open(out, "wb") as dst:
        for raw in src:
            v = obj_vertex(raw)
            if v is not None:
                xyz = " ".join(repr(float(c)) for c in np.subtract(v, centre)).encode()
                rest = b" ".join(raw.split()[4:])
                raw = b"v " + xyz + (b" " + rest if rest else b"") + b"\n"
            dst.write(raw)


def _link_material_libraries(path: Path, copy: Path) -> None:
    """Beside ``copy``, links to the MTL files ``path`` names, so that the copy reads into
    the same materials (and so the same parts) as the original."""
    text = path.read_bytes().decode(errors="replace")
    for lib in re.findall(r"^\s*mtllib\s+(.+?)\s*$", text, flags=re.MULTILINE):
        target = path.parent / lib
        link = Path(os.path.normpath(copy.parent / lib))
        if target.is_file() and link.parent.is_relative_to(copy.parent) and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target.resolve())


def recentred_parts(
    o3d: Any, path: Path, parts: list[tuple[Any, int]]
) -> tuple[list[tuple[Any, int]], np.ndarray]:
    """``(parts, offset)``: what Open3D read from ``path`` and zero, or, when the file lies far
    from the origin, the parts read from a copy moved by ``-offset`` (their vertices plus
    ``offset`` in float64 are the file's own). Falls back to ``parts`` (with a log line) when
    the copy does not read into parts of the same materials and face counts. The file is
    parsed in Python only when the float32 positions already read lie far out."""
    if not _far([np.asarray(m.vertices, dtype=np.float64) for m, _ in parts]):
        return parts, np.zeros(3)
    centre = obj_centre_if_far(path)
    if centre is None:
        return parts, np.zeros(3)
    with tempfile.TemporaryDirectory(prefix="framepipe-obj-") as tmp:
        copy = Path(tmp) / "model" / "recentred.obj"
        copy.parent.mkdir()
        _shifted_copy(path, centre, copy)
        _link_material_libraries(path, copy)
        model = o3d.io.read_triangle_model(str(copy))
    moved = [(mi.mesh, mi.material_idx) for mi in model.meshes]
    same = len(moved) == len(parts) and all(
        ma == mb and len(a.triangles) == len(b.triangles) for (a, ma), (b, mb) in zip(moved, parts)
    )
    if not same:
        log.debug("%s: the recentred copy read differently; keeping float32 positions", path)
        return parts, np.zeros(3)
    return moved, np.asarray(centre)
