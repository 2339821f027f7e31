"""Read meshes and point clouds with Open3D into plain numpy arrays the renderers use.

One :class:`Geometry` holds everything a renderer needs: vertices (file coordinates),
triangles, per-vertex normals and colours, per-corner texture coordinates, a material per
triangle (base colour and optional texture image). Meshes with several parts and materials
(OBJ with an MTL file, glTF) are merged into one set of arrays. Non-finite points are
dropped; a mesh without faces becomes a point cloud. Open3D often reports a file it cannot
read with a printed warning and an empty geometry; that is turned into a
:class:`~framepipe.errors.SourceError` here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from framepipe.errors import MissingDependencyError, SourceError
from framepipe.sources.render.check_formats import (
    check_filled,
    check_off,
    check_other,
    check_pcd,
    obj_face_problem,
)
from framepipe.sources.render.check_gltf import check_gltf
from framepipe.sources.render.check_ply import check_ply, quiet_open3d, read_ply_header
from framepipe.sources.render.obj_precision import obj_vertices, recentred_parts

log = logging.getLogger(__name__)

MESH_EXTENSIONS = frozenset({".ply", ".obj", ".glb", ".gltf", ".stl", ".off"})
CLOUD_EXTENSIONS = frozenset({".ply", ".pcd", ".xyz", ".pts"})
_ASSIMP_EXTENSIONS = frozenset({".obj", ".glb", ".gltf"})
"""Read with ``read_triangle_model`` (materials, textures); the rest with the native readers."""


@dataclass
class Material:
    """What colours a triangle: ``base_color`` (RGB in 0..1) times the texture, if any."""

    base_color: np.ndarray
    texture: np.ndarray | None = None
    """uint8 H x W x 3, row 0 at the top; looked up with OpenGL-style UVs (v up)."""


@dataclass
class Geometry:
    """A mesh or point cloud as numpy arrays, in the file's coordinates."""

    kind: Literal["mesh", "points"]
    vertices: np.ndarray
    """float64 V x 3 (points for clouds); all finite."""
    triangles: np.ndarray
    """int64 F x 3 (empty for clouds)."""
    vertex_normals: np.ndarray | None = None
    """float32 V x 3, unit length where known."""
    vertex_colors: np.ndarray | None = None
    """float32 V x 3 in 0..1."""
    corner_uvs: np.ndarray | None = None
    """float32 F x 3 x 2 texture coordinates per triangle corner (OpenGL: v up)."""
    material_ids: np.ndarray | None = None
    """int32 F: index into ``materials`` per triangle."""
    materials: list[Material] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things the user should know (missing texture, faces dropped ...)."""

    @property
    def num_primitives(self) -> int:
        return len(self.triangles) if self.kind == "mesh" else len(self.vertices)

    @property
    def has_texture(self) -> bool:
        return self.corner_uvs is not None and any(m.texture is not None for m in self.materials)


def _o3d() -> Any:
    try:
        import open3d as o3d
    except ImportError as exc:  # pragma: no cover - open3d is a dependency
        raise MissingDependencyError("open3d", None, "rendering 3D models") from exc
    return o3d


def guess_is_mesh(path: Path) -> bool:
    """Whether ``path`` holds a mesh (True) or a point cloud (False), by extension and content."""
    ext = path.suffix.lower()
    if ext == ".ply":
        header = read_ply_header(path)
        if header is None:
            raise SourceError(path, "not a PLY file (bad header)")
        return header.count("face") > 0
    return ext in MESH_EXTENSIONS


def load_geometry(path: Path) -> Geometry:
    """Read ``path`` (mesh or point cloud) into a :class:`Geometry`; raise SourceError."""
    if not path.is_file():
        raise SourceError(path, "not a regular file" if path.exists() else "no such file")
    if path.stat().st_size == 0:
        raise SourceError(path, "file is empty")
    ext = path.suffix.lower()
    if ext not in MESH_EXTENSIONS | CLOUD_EXTENSIONS:
        raise SourceError(path, f"not a 3D model or point cloud extension ({ext or 'none'})")
    try:
        declared = _check_file(path, ext)
    except OSError as exc:
        raise SourceError(path, f"cannot read file: {exc.strerror or exc}") from exc
    o3d = _o3d()
    with quiet_open3d(o3d, path) as printed:
        geom = _read_mesh(path) if guess_is_mesh(path) else _read_cloud(path)
    failed = printed.failure()
    if failed is not None:  # Open3D says so and still returns what it read so far
        raise SourceError(path, f"Open3D: {failed}")
    if declared is not None:
        _check_counts(path, geom, declared)
    return _clean(path, geom)


def _check_file(path: Path, ext: str) -> tuple[int, int] | None:
    """Refuse a file whose header promises more than it holds, before Open3D reads it;
    ``(vertices, faces)`` its header declares (PLY, OFF), else None."""
    check_filled(path, path.stat().st_size)
    if ext == ".ply":
        header = read_ply_header(path)
        if header is None:
            raise SourceError(path, "not a PLY file (bad header)")
        check_ply(path, header)
        return header.count("vertex"), header.count("face")
    if ext == ".off":
        return check_off(path)
    if ext == ".pcd":
        points = check_pcd(path)
        return None if points is None else (points, 0)
    check_other(path, ext)
    if ext in (".gltf", ".glb"):
        check_gltf(path)
    return None


def _check_counts(path: Path, g: Geometry, declared: tuple[int, int]) -> None:
    """Open3D read every vertex and face the (already checked) header declares."""
    nv, nf = declared
    if len(g.vertices) != nv:
        raise SourceError(path, f"Open3D read {len(g.vertices)} of {nv} vertices")
    if g.kind == "mesh" and len(g.triangles) < nf:
        raise SourceError(path, f"truncated: Open3D read {len(g.triangles)} of {nf} faces")


# -- meshes -------------------------------------------------------------------------------
def _read_mesh(path: Path) -> Geometry:
    o3d = _o3d()
    ext = path.suffix.lower()
    notes: list[str] = []
    offset = np.zeros(3)
    if ext in _ASSIMP_EXTENSIONS:
        model = o3d.io.read_triangle_model(str(path))
        if ext == ".obj":
            notes += _missing_obj_textures(path)
        elif ext == ".gltf":
            notes += _missing_gltf_files(path)
        parts = [(mi.mesh, mi.material_idx) for mi in model.meshes]
        materials = [_material(m) for m in model.materials]
        if ext == ".obj":  # Assimp reads float32: world coordinates lose their detail
            parts, offset = recentred_parts(o3d, path, parts)
    else:
        mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=True)
        parts = [(mesh, 0)]
        materials = []
    if not materials:
        materials = [Material(np.ones(3, np.float32))]
    if not parts or all(len(m.vertices) == 0 for m, _ in parts):
        if ext == ".obj":  # Assimp drops an OBJ without faces; its vertices are a cloud
            try:
                problem = obj_face_problem(path)
            except OSError as exc:
                raise SourceError(path, f"cannot read file: {exc.strerror or exc}") from exc
            if problem is not None:
                raise SourceError(path, f"bad OBJ: {problem}")
            pts = obj_vertices(path)
            if len(pts):
                notes.append("OBJ has no faces: rendered as points")
                return Geometry("points", pts, np.zeros((0, 3), np.int64), notes=notes)
        raise SourceError(path, "Open3D read no geometry (unreadable or empty file)")
    return _merge(parts, materials, notes, offset)


def _material(rec: Any) -> Material:
    base = np.asarray(rec.base_color, dtype=np.float32).reshape(-1)[:3]
    if base.shape != (3,) or not np.all(np.isfinite(base)):
        base = np.ones(3, np.float32)
    tex = None
    img = getattr(rec, "albedo_img", None)
    if img is not None:
        arr = np.asarray(img)
        if arr.ndim >= 2 and arr.size > 0:
            tex = _to_rgb8(arr)
    return Material(np.clip(base, 0.0, 1.0), tex)


def _to_rgb8(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:  # 16-bit
            arr = (arr.astype(np.float64) / max(1.0, float(np.iinfo(arr.dtype).max)) * 255).astype(
                np.uint8
            )
    c = arr.shape[2]
    if c == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif c == 2:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif c > 3:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _merge(
    parts: list[tuple[Any, int]], materials: list[Material], notes: list[str], shift: np.ndarray
) -> Geometry:
    """One Geometry of ``parts``, their vertices moved by ``shift`` (float64)."""
    verts, tris, normals, colors, uvs, mids = [], [], [], [], [], []
    any_normals = all(m.has_vertex_normals() for m, _ in parts)
    any_colors = any(m.has_vertex_colors() for m, _ in parts)
    any_uvs = any(m.has_triangle_uvs() for m, _ in parts)
    offset = 0
    for mesh, mat in parts:
        v = np.asarray(mesh.vertices, dtype=np.float64) + shift
        t = np.asarray(mesh.triangles, dtype=np.int64).reshape(-1, 3)
        verts.append(v)
        tris.append(t + offset)
        if any_normals:
            normals.append(np.asarray(mesh.vertex_normals, dtype=np.float32))
        if any_colors:
            c = (
                np.asarray(mesh.vertex_colors, dtype=np.float32)
                if mesh.has_vertex_colors()
                else np.ones((len(v), 3), np.float32)
            )
            colors.append(c)
        if any_uvs:
            uv = np.asarray(mesh.triangle_uvs, dtype=np.float32)
            if len(uv) != 3 * len(t):
                uv = np.zeros((3 * len(t), 2), np.float32)
            uvs.append(uv.reshape(-1, 3, 2))
        m = mat if 0 <= mat < len(materials) else 0
        mids.append(np.full(len(t), m, dtype=np.int32))
        offset += len(v)
    return Geometry(
        kind="mesh",
        vertices=np.concatenate(verts),
        triangles=np.concatenate(tris) if tris else np.zeros((0, 3), np.int64),
        vertex_normals=np.concatenate(normals) if any_normals else None,
        vertex_colors=np.concatenate(colors) if any_colors else None,
        corner_uvs=np.concatenate(uvs) if any_uvs else None,
        material_ids=np.concatenate(mids),
        materials=materials,
        notes=notes,
    )


def _missing_obj_textures(path: Path) -> list[str]:
    """Notes for MTL files or texture images an OBJ names but that are not on disk."""
    notes: list[str] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return notes
    for lib in re.findall(r"^\s*mtllib\s+(.+?)\s*$", text, flags=re.MULTILINE):
        mtl = path.parent / lib
        if not mtl.is_file():
            notes.append(f"material file {lib} is missing: rendered with plain colour")
            continue
        mtext = mtl.read_text(errors="replace")
        for tex in re.findall(r"^\s*map_Kd\s+(?:-\S+\s+\S+\s+)*(.+?)\s*$", mtext, re.MULTILINE):
            if not (mtl.parent / tex).is_file():
                notes.append(f"texture {tex} is missing: rendered with material or vertex colour")
    return notes


def _missing_gltf_files(path: Path) -> list[str]:
    """Notes for images a .gltf file names but that are not on disk (a missing buffer is an
    error: see :func:`check_gltf`)."""
    import json
    from urllib.parse import unquote

    try:
        doc = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return []
    notes = []
    for item in doc.get("images", []) if isinstance(doc, dict) else []:
        uri = item.get("uri") if isinstance(item, dict) else None
        if (
            isinstance(uri, str)
            and not uri.startswith("data:")
            and not (path.parent / unquote(uri)).is_file()
        ):
            notes.append(f"texture {uri} is missing: rendered with material colour")
    return notes


# -- point clouds -------------------------------------------------------------------------
def _read_cloud(path: Path) -> Geometry:
    o3d = _o3d()
    pc = o3d.io.read_point_cloud(str(path))
    pts = np.asarray(pc.points, dtype=np.float64)
    if len(pts) == 0:
        raise SourceError(path, "Open3D read no points (unreadable or empty file)")
    return Geometry(
        kind="points",
        vertices=pts,
        triangles=np.zeros((0, 3), np.int64),
        vertex_normals=np.asarray(pc.normals, np.float32) if pc.has_normals() else None,
        vertex_colors=np.asarray(pc.colors, np.float32) if pc.has_colors() else None,
    )


# -- cleaning -----------------------------------------------------------------------------
def _clean(path: Path, g: Geometry) -> Geometry:
    """Drop non-finite points (and the faces that use them); a mesh without faces -> points."""
    finite = np.all(np.isfinite(g.vertices), axis=1)
    if not finite.any():
        raise SourceError(path, f"all {len(g.vertices)} points are NaN or infinite")
    if g.vertex_colors is not None:
        g.vertex_colors = np.nan_to_num(np.clip(g.vertex_colors, 0.0, 1.0), nan=0.7)
    if g.vertex_normals is not None:
        n = np.nan_to_num(g.vertex_normals.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        length = np.linalg.norm(n, axis=1, keepdims=True)
        g.vertex_normals = np.where(length > 1e-12, n / np.maximum(length, 1e-12), 0.0).astype(
            np.float32
        )
        if not np.any(length > 1e-12):
            g.vertex_normals = None
    if g.kind == "mesh":
        tris = g.triangles
        ok = np.ones(len(tris), bool)
        if len(tris):
            ok &= np.all((tris >= 0) & (tris < len(g.vertices)), axis=1)
            ok[ok] &= np.all(finite[tris[ok]], axis=1)
        if not ok.all():
            g.notes.append(f"{int((~ok).sum())} face(s) with NaN/infinite/invalid vertices dropped")
            g.triangles = tris[ok]
            if g.corner_uvs is not None:
                g.corner_uvs = g.corner_uvs[ok]
            if g.material_ids is not None:
                g.material_ids = g.material_ids[ok]
        if len(g.triangles) and not finite.all():
            g.vertices = np.where(finite[:, None], g.vertices, 0.0)  # unused by any face now
        if len(g.triangles) == 0:
            g.notes.append("mesh has no faces: rendered as points")
            g.kind = "points"
            g.corner_uvs = None
            g.material_ids = None
            if g.vertex_colors is None and g.materials:
                g.vertex_colors = np.tile(g.materials[0].base_color, (len(g.vertices), 1))
    if g.kind == "points":
        dropped = int((~finite).sum())
        if dropped:
            g.notes.append(f"{dropped} NaN/infinite point(s) dropped")
            g.vertices = g.vertices[finite]
            if g.vertex_normals is not None:
                g.vertex_normals = g.vertex_normals[finite]
            if g.vertex_colors is not None:
                g.vertex_colors = g.vertex_colors[finite]
    for note in g.notes:
        log.warning("%s: %s", path, note)
    return g


def used_points(g: Geometry) -> np.ndarray:
    """The points that will be drawn (vertices used by faces for meshes), float64 N x 3."""
    if g.kind == "mesh":
        used = np.zeros(len(g.vertices), bool)
        used[g.triangles.reshape(-1)] = True
        return g.vertices[used]
    return g.vertices
