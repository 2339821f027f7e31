"""The multi-view source: a folder of images is one scene, each image one view; an image
file a user names is a scene of one view (its view named by its file name, no pose).

A folder is a scene when it has camera poses (``transforms.json``, NeRF split files, or a
COLMAP model, see :mod:`framepipe.sources.multiview.poses`) or when it holds image files and no file
of another kind (no video, no 3D model). Views are the posed images that exist on disk plus
the other images in the scene folder and in the folders of the posed images (those have no
pose), in natural file-name order (``img2`` before ``img10``). In a scene without poses,
images in subfolders are no views (a warning names those subfolders).

:meth:`MultiviewSource.info` reads image headers only (size, format, EXIF orientation): it
decodes no pixels. A JPEG or PNG whose end is missing (a truncated copy) is skipped with a
note, as is a file that is not an image; the scene goes on with the others.
:meth:`MultiviewSource.read` decodes only the views asked for, applies the EXIF orientation,
converts every colour mode (grayscale, palette, RGBA composited on white, 16-bit) to RGB
8-bit, and bounds the longest side to ``max_side`` (JPEG is decoded at reduced scale with
``draft``, so memory stays bounded however large the file; other formats are decoded one at
a time, PIL's decompression-bomb limit refusing absurd sizes).

Source options (``--source-opt KEY=VALUE``):

- ``max_side`` (int, default 2048): bound on the longest side of the frames ``read``
  returns; 0 keeps the full size. Larger images are reduced by an integer factor (JPEG:
  decoded at 1/2, 1/4 or 1/8 scale), so the longest side ends between half of ``max_side``
  and ``max_side`` without resampling; the model sees 384x384, so this loses nothing.
- ``min_views`` (int, default 1): fewer readable views than this is an error.
- ``verify`` (``header`` or ``decode``, default ``header``): ``header`` checks headers and,
  for JPEG and PNG, that the file is complete; ``decode`` also decodes every view once at
  reduced size (JPEG at 1/8 scale) in :meth:`~MultiviewSource.info`, so that an image
  corrupt in the middle is skipped with a note instead of failing the clip that chose it.
- ``background`` (``[r, g, b]``, default white): what transparent pixels become.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framepipe.errors import ConfigError, DecodeError, SourceError
from framepipe.sources.base import (
    Source,
    colour_option,
    frame_indices,
    register_source,
    source_kinds,
)
from framepipe.sources.multiview.images import (
    ImageHeader,
    decode_image,
    file_looks_like_image,
    is_image_file,
    looks_like_image,
    probe_image,
    read_size,
)
from framepipe.sources.multiview.poses import (
    PoseFile,
    complete_intrinsics,
    find_pose_file,
    load_poses,
)
from framepipe.types import FrameBatch, SourceInfo, ViewInfo, as_matrix4
from framepipe.utils import natural_key

log = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 2048
_DOWNSCALED = re.compile(r"images_\d+")
_UNREADABLE = re.compile(r"[^.].*\.(heic|heif|hif)", re.IGNORECASE)
_HEIC_REASON = "HEIC/HEIF images cannot be read here (no decoder): convert them to JPEG"
_VERIFY_SIZE = (32, 32)


@dataclass(frozen=True)
class _View:
    path: Path
    header: ImageHeader
    view: ViewInfo


@register_source
class MultiviewSource(Source):
    """A scene folder: one view per image, with camera poses when the folder has them."""

    kind: ClassVar[str] = "multiview"
    extensions: ClassVar[frozenset[str]] = frozenset()  # images in a folder walk: no scenes

    @classmethod
    def claims_given_file(cls, path: Path) -> bool:
        """An image file a user names is a scene of one view (HEIC too: a clear error)."""
        return is_image_file(path.name) or bool(_UNREADABLE.fullmatch(path.name))

    @classmethod
    def sniff_given_file(cls, path: Path, head: bytes) -> bool:
        """An image a user names without an image's extension (``photo``, a hash)."""
        return looks_like_image(head)

    @classmethod
    def claims_dir(cls, path: Path) -> bool:
        """A folder with a pose file, or with images and no file of another kind."""
        if find_pose_file(path) is not None:
            return True
        others = [k for name, k in source_kinds().items() if name != cls.kind]
        images = 0
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if entry.name.startswith(".") or not _entry_is_file(entry):
                        continue
                    if is_image_file(entry.name):
                        images += 1
                        continue
                    p = Path(entry.path)
                    if any(k.claims_file(p) for k in others):
                        return False  # videos or 3D models: a folder of inputs, not a scene
        except OSError:
            return False
        return images > 0

    @classmethod
    def copy_of(cls, path: Path) -> str | None:
        """``images_2``, ``images_4`` ... beside ``images`` (nerfstudio, LLFF, Mip-NeRF 360)
        are downscaled copies of its views, not scenes of their own."""
        if _DOWNSCALED.fullmatch(path.name) and (path.parent / "images").is_dir():
            return "a downscaled copy of the views in images/ beside it, not a scene of its own"
        return None

    def __init__(
        self,
        path: str | Path,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
        min_views: int = 1,
        verify: str = "header",
        background: Any = (255, 255, 255),
        **options: Any,
    ) -> None:
        super().__init__(path, **options)
        self.max_side = _int_option("max_side", max_side, minimum=0)
        self.min_views = _int_option("min_views", min_views, minimum=1)
        self.verify = str(verify)
        if self.verify not in ("header", "decode"):
            raise ConfigError(f"source option verify ({self.verify!r}) must be header or decode")
        self.background = colour_option(background)
        self._views: list[_View] | None = None
        self._info: SourceInfo | None = None
        self.decode_counts = {"full": 0, "small": 0}
        """How many images :meth:`read` and :meth:`read_small` decoded (for benchmarks)."""

    # -- metadata ---------------------------------------------------------------------
    def info(self) -> SourceInfo:
        if self._info is None:
            self._info = self._scan()
        return self._info

    def _scan(self) -> SourceInfo:
        root = self.path
        if not root.exists():  # an image's name: a one-view scene that is not there
            raise SourceError(
                root, "no such file" if self.claims_given_file(root) else "no such folder"
            )
        if root.is_file() and _UNREADABLE.fullmatch(root.name):
            raise SourceError(root, _HEIC_REASON)
        if root.is_file() and (is_image_file(root.name) or file_looks_like_image(root)):
            return self._finish(root, root.parent, None, {root.resolve(): root}, [])
        if not root.is_dir():
            raise SourceError(root, "not a folder (a multi-view scene is a folder of images)")
        poses = load_poses(root)
        dirs = [root]
        if poses is not None:
            dirs += [d for d in poses.image_dirs if d.resolve() != root.resolve()]
            _note_missing(poses)
        files: dict[Path, Path] = {}
        unsupported: list[str] = []  # photos of a kind Pillow cannot decode (HEIC)
        for im in poses.images if poses is not None else ():
            files.setdefault(im.path.resolve(), im.path)
        for d in dirs:
            try:
                names = os.listdir(d)
            except OSError as exc:
                raise SourceError(d, f"cannot list folder ({exc.strerror or exc})") from exc
            for name in names:
                p = d / name
                if is_image_file(name) and p.is_file():
                    files.setdefault(p.resolve(), p)
                elif _UNREADABLE.fullmatch(name) and p.is_file():
                    unsupported.append(_rel_name(p, root))
        if poses is None:
            _note_subfolders(root)
        if not files:
            if poses is not None and poses.missing:
                raise SourceError(
                    poses.path,
                    f"lists {len(poses.missing)} image(s), none found on disk "
                    f"(e.g. {poses.missing[0]})",
                )
            raise SourceError(root, "folder holds no images (.jpg .png .webp .bmp .tif)")
        return self._finish(root, root, poses, files, unsupported)

    def _finish(
        self,
        root: Path,
        base: Path,
        poses: PoseFile | None,
        files: dict[Path, Path],
        unsupported: list[str],
    ) -> SourceInfo:
        """The scene ``root`` of the image ``files`` (resolved path: path), views named
        relative to the folder ``base`` (the scene folder, or a single image's folder)."""
        posed: dict[Path, tuple[np.ndarray, dict[str, float]]] = {}
        for im in poses.images if poses is not None else ():
            posed.setdefault(im.path.resolve(), (im.pose_c2w, dict(im.intrinsics)))
        named = sorted(
            ((_rel_name(p, base), key, p) for key, p in files.items()),
            key=lambda t: natural_key(t[0]),
        )
        views: list[_View] = []
        bad: dict[str, str] = {n: _HEIC_REASON for n in sorted(unsupported, key=natural_key)}
        if bad:
            log.warning("%s: skipping %d view(s) (%s): %s", root, len(bad), _few(bad), _HEIC_REASON)
        for name, key, p in named:
            try:
                header = probe_image(p)
                if self.verify == "decode":
                    decode_image(p, header, size=_VERIFY_SIZE)
            except SourceError as exc:  # DecodeError too
                if root.is_file():  # a single image: its own error
                    raise
                log.warning("%s: skipping view %s: %s", root, name, exc.reason)
                bad[name] = exc.reason
                continue
            pose, intr = posed.get(key, (None, {}))
            intrinsics = _intrinsics(p, intr, header.stored_size)
            vi = ViewInfo(name, as_matrix4(pose) if pose is not None else None, intrinsics)
            views.append(_View(p, header, vi))
        if len(views) < self.min_views:
            raise SourceError(
                root,
                f"{len(views)} readable image(s), fewer than min_views={self.min_views}"
                + (f" ({len(bad)} unreadable, e.g. {next(iter(bad))})" if bad else ""),
            )
        self._views = views
        sizes = {read_size(v.header, self.max_side) for v in views}
        width, height = next(iter(sizes)) if len(sizes) == 1 else (0, 0)
        extra: dict[str, Any] = {
            "poses": poses.format if poses is not None else None,
            "pose_file": _rel_name(poses.path, root) if poses is not None else None,
            "views_with_pose": sum(v.view.pose_c2w is not None for v in views),
            "max_side": self.max_side,
        }
        # on every record of the scene: the views it lost, so that no view is lost silently
        record: dict[str, Any] = {}
        if poses is not None and poses.missing:
            extra["missing_files"] = len(poses.missing)
            record["missing_files"] = list(poses.missing)
        if bad:
            extra["unreadable_images"] = list(bad)
            record["skipped_views"] = dict(bad)
        if record:
            extra["record"] = record
        return SourceInfo(
            id=str(root),
            kind=self.kind,
            num_frames=len(views),
            width=width,
            height=height,
            views=tuple(v.view for v in views),
            backend="pil",
            extra=extra,
        )

    def _view_list(self) -> list[_View]:
        self.info()
        assert self._views is not None
        return self._views

    # -- reading ----------------------------------------------------------------------
    def read(self, indices: Sequence[int]) -> FrameBatch:
        views = self._view_list()
        idx = frame_indices(indices, self.path)
        self._check(idx, len(views))
        sizes = {read_size(views[i].header, self.max_side) for i in idx}
        if len(sizes) == 1 and idx:
            # One size (known from the headers): decode straight into the output array, so
            # the peak is the output plus one image, not the output plus all images.
            w, h = next(iter(sizes))
            out = np.empty((len(idx), h, w, 3), dtype=np.uint8)
            first: dict[int, int] = {}
            for k, i in enumerate(idx):
                if i in first:
                    out[k] = out[first[i]]
                    continue
                first[i] = k
                frame = self._decode(views[i])
                if frame.shape != (h, w, 3):  # pragma: no cover - read_size mirrors decode
                    raise DecodeError(views[i].path, f"decoded {frame.shape}, expected {h}x{w}")
                out[k] = frame
                del frame
            return FrameBatch(out, tuple(idx), views=tuple(views[i].view for i in idx))
        decoded: dict[int, np.ndarray] = {}
        for i in idx:
            if i not in decoded:
                decoded[i] = self._decode(views[i])
        frames = [decoded[i] for i in idx]
        return FrameBatch(frames, tuple(idx), views=tuple(views[i].view for i in idx))

    def _decode(self, v: _View) -> np.ndarray:
        self.decode_counts["full"] += 1
        return decode_image(v.path, v.header, max_side=self.max_side, background=self.background)

    def _read_small(self, indices: list[int], size: tuple[int, int]) -> np.ndarray:
        """Views as tiny thumbnails of exactly ``size`` (width, height); JPEGs are decoded at
        1/8 scale where that is large enough."""
        views = self._view_list()
        out = np.empty((len(indices), size[1], size[0], 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            v = views[i]
            out[k] = decode_image(v.path, v.header, size=size, background=self.background)
            self.decode_counts["small"] += 1
        return out

    def _check(self, idx: Sequence[int], count: int) -> None:
        bad = [i for i in idx if not 0 <= i < count]
        if bad:
            raise SourceError(self.path, f"view indices out of range 0..{count - 1}: {bad[:5]}")


def _intrinsics(
    image: Path, intr: dict[str, float], size: tuple[int, int]
) -> dict[str, float] | None:
    """The view's intrinsics from what the pose file says, or None: also when what it says
    is not a camera (then a warning naming the image says why, and the view has no
    intrinsics rather than absurd ones in its record)."""
    if not intr:
        return None
    try:
        return complete_intrinsics(intr, *size)
    except ValueError as exc:
        log.warning("%s: camera intrinsics ignored (%s)", image, exc)
        return None


def _rel_name(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return p.as_posix()


def _few(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _note_missing(poses: PoseFile) -> None:
    if poses.missing:
        shown = _few(poses.missing)
        log.warning(
            "%s: %d listed image(s) not found on disk, skipped (%s)",
            poses.path,
            len(poses.missing),
            shown,
        )


def _note_subfolders(root: Path) -> None:
    """Warn about the subfolders of a scene without poses that hold images: they are not
    views of this scene, and discovery does not search inside a scene for others."""
    nested: list[str] = []
    try:
        with os.scandir(root) as it:
            subdirs = sorted((e.path for e in it if not e.name.startswith(".")), key=natural_key)
    except OSError:
        return
    for d in subdirs:
        try:
            if os.path.isdir(d) and any(is_image_file(n) for n in os.listdir(d)):
                nested.append(os.path.basename(d))
        except OSError:
            continue
    if nested:
        shown = ", ".join(nested[:3]) + (", ..." if len(nested) > 3 else "")
        log.warning(
            "%s: %d subfolder(s) with images not read (%s): a scene's views are the images "
            "directly in its folder; name a subfolder to read it as a scene",
            root,
            len(nested),
            shown,
        )


def _int_option(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"source option {name} ({value!r}) must be an integer")
    if value < minimum:
        raise ConfigError(f"source option {name} ({value}) must be >= {minimum}")
    return int(value)


def _entry_is_file(entry: os.DirEntry[str]) -> bool:
    """Whether a folder entry is a regular file (links followed); False for a link loop or
    a broken link rather than an error, so one bad entry does not hide a scene."""
    try:
        return entry.is_file()
    except OSError:
        return False
