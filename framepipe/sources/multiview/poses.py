"""Camera poses of a multi-view scene: NeRF-style ``transforms.json`` and COLMAP models.

Everything is returned as camera-to-world 4x4 matrices in the OpenGL/NeRF convention (the
camera looks down its -z axis, y up), the convention of :class:`~framepipe.types.ViewInfo`.

- ``transforms.json`` (NeRF synthetic, instant-ngp, nerfstudio): ``frames[*].file_path``
  (relative to the file, with or without an extension) and ``frames[*].transform_matrix``
  (camera-to-world, 4x4 or 3x4). Intrinsics from ``fl_x/fl_y/cx/cy/w/h`` (top level or per
  frame) or ``camera_angle_x``. NeRF synthetic's split files (``transforms_train.json``,
  ``transforms_val.json``, ``transforms_test.json``) are merged when there is no
  ``transforms.json``.
- COLMAP (text ``images.txt`` / ``cameras.txt``, or binary ``images.bin`` /
  ``cameras.bin``): world-to-camera rotation (quaternion ``QW QX QY QZ``) and translation in
  the OpenCV convention (camera looks down +z, y down), turned into camera-to-world OpenGL.
  Image names are relative to the image folder COLMAP was given (``images/`` by default).

Frames listed but missing on disk are returned in ``missing``; the source skips them with a
note. A file that cannot be parsed raises :class:`~framepipe.errors.SourceError` naming the
file and what is wrong; so does a pose with a non-finite number (naming the image too), and
an ``images.bin`` whose image count cannot fit the file (refused before any record is read).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import SourceError
from framepipe.sources.multiview.colmap import (
    colmap_to_c2w,
    read_colmap_cameras_bin,
    read_colmap_cameras_txt,
    read_colmap_images_bin,
    read_colmap_images_txt,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".avif"}
)
"""Lower-case suffixes of the image files a scene is made of."""

TRANSFORMS_NAME = "transforms.json"
SPLIT_TRANSFORMS = ("transforms_train.json", "transforms_val.json", "transforms_test.json")
COLMAP_DIRS = ("", "sparse/0", "sparse", "colmap/sparse/0", "colmap", "colmap/sparse")
"""Folders (relative to the scene) searched for a COLMAP model, in this order."""


@dataclass(frozen=True)
class PosedImage:
    """One image listed by a pose file and found on disk."""

    path: Path
    """The image file."""
    pose_c2w: np.ndarray
    """float64 4x4 camera-to-world, OpenGL convention."""
    intrinsics: Mapping[str, float] = field(default_factory=dict)
    """What the file says about the camera: any of ``fx fy cx cy width height`` (pixels)
    and ``camera_angle_x`` / ``camera_angle_y`` (radians, to be completed with the image
    size by :func:`complete_intrinsics`)."""


@dataclass(frozen=True)
class PoseFile:
    """What a pose file gives: the posed images that exist, and the listed ones that don't."""

    path: Path
    """The file that was read (the first one when several split files were merged)."""
    format: str
    """``transforms.json``, ``colmap-text`` or ``colmap-binary``."""
    images: tuple[PosedImage, ...]
    missing: tuple[str, ...] = ()
    """Listed file paths (as written in the file) that are not on disk."""

    @property
    def image_dirs(self) -> list[Path]:
        """Folders that hold posed images (unposed images there are views too)."""
        seen: dict[Path, None] = {}
        for im in self.images:
            seen.setdefault(im.path.parent, None)
        return list(seen)


# -- finding -------------------------------------------------------------------------------
def find_pose_file(folder: Path) -> Path | None:
    """The pose file of the scene in ``folder``, or None (cheap: a few ``stat`` calls)."""
    p = folder / TRANSFORMS_NAME
    if p.is_file():
        return p
    for name in SPLIT_TRANSFORMS:
        if (folder / name).is_file():
            return folder / name
    for sub in COLMAP_DIRS:
        d = folder / sub if sub else folder
        for name in ("images.txt", "images.bin"):
            if (d / name).is_file():
                return d / name
    return None


def load_poses(folder: Path) -> PoseFile | None:
    """Read the scene's pose file (see :func:`find_pose_file`), or None when there is none."""
    p = find_pose_file(folder)
    if p is None:
        return None
    if p.name == TRANSFORMS_NAME:
        return parse_transforms(p)
    if p.name in SPLIT_TRANSFORMS:
        files = [folder / n for n in SPLIT_TRANSFORMS if (folder / n).is_file()]
        return merge_pose_files([parse_transforms(f) for f in files])
    return parse_colmap(p, scene=folder)


def merge_pose_files(files: Sequence[PoseFile]) -> PoseFile:
    """One :class:`PoseFile` from several (NeRF splits); the first pose of an image wins."""
    images: dict[Path, PosedImage] = {}
    missing: list[str] = []
    for f in files:
        for im in f.images:
            images.setdefault(im.path, im)
        missing.extend(f.missing)
    return PoseFile(files[0].path, files[0].format, tuple(images.values()), tuple(missing))


# -- transforms.json -----------------------------------------------------------------------
_INTRINSIC_KEYS = {
    "fl_x": "fx",
    "fl_y": "fy",
    "cx": "cx",
    "cy": "cy",
    "w": "width",
    "h": "height",
    "camera_angle_x": "camera_angle_x",
    "camera_angle_y": "camera_angle_y",
}


def _intrinsics_of(obj: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, name in _INTRINSIC_KEYS.items():
        v = obj.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)
    return out


def parse_transforms(path: Path) -> PoseFile:
    """Parse a NeRF-style ``transforms.json`` (NeRF synthetic, instant-ngp, nerfstudio)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(path, f"cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(path, "is not UTF-8 text") from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(
            path, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except RecursionError as exc:  # [[[[...]]]]: deeper than the parser's stack
        raise SourceError(path, "is not a pose file (JSON nested too deeply to read)") from exc
    if not isinstance(meta, dict):
        raise SourceError(path, f"top level must be a JSON object, got {type(meta).__name__}")
    frames = meta.get("frames")
    if frames is None:
        raise SourceError(path, "has no 'frames' list")
    if not isinstance(frames, list):
        raise SourceError(path, f"'frames' must be a list, got {type(frames).__name__}")
    common = _intrinsics_of(meta)
    base = path.parent
    images: list[PosedImage] = []
    missing: list[str] = []
    for k, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise SourceError(path, f"frames[{k}] must be an object, got {type(fr).__name__}")
        fp = fr.get("file_path")
        if not isinstance(fp, str) or not fp.strip():
            raise SourceError(path, f"frames[{k}] has no 'file_path' string")
        if "transform_matrix" not in fr:
            raise SourceError(path, f"frames[{k}] ({fp}) has no 'transform_matrix'")
        pose = _matrix(fr["transform_matrix"], path, f"frames[{k}] ({fp}) transform_matrix")
        found = resolve_image(base, fp)
        if found is None:
            missing.append(fp)
            continue
        intr = {**common, **_intrinsics_of(fr)}
        images.append(PosedImage(found, pose, intr))
    return PoseFile(path, "transforms.json", tuple(images), tuple(missing))


def _matrix(value: Any, path: Path, what: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SourceError(path, f"{what} is not a matrix of numbers") from exc
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if a.shape != (4, 4):
        raise SourceError(path, f"{what} must be 4x4 or 3x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise SourceError(path, f"{what} holds non-finite numbers")
    if abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise SourceError(path, f"{what} has a singular rotation part")
    return a


def resolve_image(base: Path, file_path: str) -> Path | None:
    """The image file a pose file means by ``file_path`` (relative to ``base``), or None.

    ``file_path`` may lack its extension (NeRF synthetic writes ``./train/r_0``); then the
    image extensions are tried, lower and upper case.
    """
    rel = file_path.strip().replace("\\", "/")
    p = Path(rel)
    if not p.is_absolute():
        p = base / rel
    # ``./images/../images/r_2`` is ``images/r_2``: the view's name and its place in the
    # natural order are those of the file, however the pose file spells the way to it.
    p = Path(os.path.normpath(p))
    if is_existing_file(p):
        return p
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        for ext in sorted(IMAGE_EXTENSIONS):
            for cand in (p.with_name(p.name + ext), p.with_name(p.name + ext.upper())):
                if is_existing_file(cand):
                    return cand
    return None


def is_existing_file(p: Path) -> bool:
    """Whether ``p`` is a file; False, not an error, for a path the system refuses to look
    up (a name too long, a component that is not a folder): a pose file may list anything."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def complete_intrinsics(
    intr: Mapping[str, float], width: int, height: int
) -> dict[str, float] | None:
    """``fx fy cx cy width height`` in pixels, from what a pose file gave and the image
    size; None when the file gave no focal length. ValueError (the reason) when what it gave
    is not a camera: a size that is not a positive finite number of pixels, a focal length
    that is not finite or is outside 1e-3 to 1e5 image widths (a field of view of almost 0 or
    180 degrees), or a principal point far outside the image."""
    w = float(intr.get("width", width))
    h = float(intr.get("height", height))
    if not (math.isfinite(w) and math.isfinite(h) and 1 <= w <= 1e6 and 1 <= h <= 1e6):
        raise ValueError(f"image size {w:g} x {h:g} is not a size in pixels")
    # A zero or negative focal length or field of view (a broken file) counts as absent:
    # tan(0) would divide by zero.
    fx = _positive(intr.get("fx"))
    fy = _positive(intr.get("fy"))
    ax, ay = intr.get("camera_angle_x"), intr.get("camera_angle_y")
    if fx is None and ax is not None and 0 < ax < math.pi:
        fx = 0.5 * w / math.tan(0.5 * ax)
    if fy is None and ay is not None and 0 < ay < math.pi:
        fy = 0.5 * h / math.tan(0.5 * ay)
    if fx is None and fy is None:
        return None
    fx = fx if fx is not None else fy
    fy = fy if fy is not None else fx
    assert fx is not None and fy is not None
    for name, f, size in (("fx", fx, w), ("fy", fy, h)):
        if not (math.isfinite(f) and 1e-3 * size < f < 1e5 * size):
            raise ValueError(f"focal length {name}={f:g} is not one of a {size:g}-pixel image")
    cx, cy = float(intr.get("cx", w / 2)), float(intr.get("cy", h / 2))
    if not (math.isfinite(cx) and math.isfinite(cy) and -w <= cx <= 2 * w and -h <= cy <= 2 * h):
        raise ValueError(f"principal point ({cx:g}, {cy:g}) is far outside the image")
    return {"fx": float(fx), "fy": float(fy), "cx": cx, "cy": cy, "width": w, "height": h}


def _positive(v: float | None) -> float | None:
    return v if v is not None and v > 0 else None


def parse_colmap(images_file: Path, *, scene: Path) -> PoseFile:
    """Read a COLMAP model (``images.txt`` or ``images.bin``, and the cameras file beside it
    when present). Image names are looked up in ``scene/images/``, then ``scene/``, then the
    model's folder."""
    binary = images_file.suffix == ".bin"
    entries = read_colmap_images_bin(images_file) if binary else read_colmap_images_txt(images_file)
    cam_file = images_file.with_name("cameras.bin" if binary else "cameras.txt")
    cameras: dict[int, dict[str, float]] = {}
    if cam_file.is_file():
        cameras = read_colmap_cameras_bin(cam_file) if binary else read_colmap_cameras_txt(cam_file)
    roots = [scene / "images", scene, images_file.parent]
    images: list[PosedImage] = []
    missing: list[str] = []
    for e in entries:
        try:
            pose = colmap_to_c2w(e.qvec, e.tvec)
        except ValueError as exc:
            raise SourceError(
                images_file, f"image {e.name!r} (IMAGE_ID {e.image_id}): {exc}"
            ) from exc
        found = next((r / e.name for r in roots if is_existing_file(r / e.name)), None)
        if found is None:
            missing.append(e.name)
            continue
        images.append(PosedImage(found, pose, dict(cameras.get(e.camera_id, {}))))
    fmt = "colmap-binary" if binary else "colmap-text"
    return PoseFile(images_file, fmt, tuple(images), tuple(missing))
