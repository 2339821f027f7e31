"""Value objects that flow between the stages (see DESIGN.md).

Units are in the names: ``*_s`` is seconds, ``*_frame`` is a frame index in presentation
order. Objects are frozen; ``__repr__`` prints shapes, never pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

Matrix4 = tuple[tuple[float, float, float, float], ...]
"""A 4x4 matrix as nested tuples (row-major), so that it is hashable and JSON-friendly."""


def as_matrix4(m: Any) -> Matrix4:
    """Convert an array-like 4x4 (or 3x4, completed with ``0 0 0 1``) to :data:`Matrix4`."""
    a = np.asarray(m, dtype=np.float64)
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if a.shape != (4, 4):
        raise ValueError(f"a pose must be 4x4 or 3x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("a pose must hold finite numbers only")
    return tuple(tuple(float(v) for v in row) for row in a)  # type: ignore[misc]


@dataclass(frozen=True)
class ViewInfo:
    """One view of a multi-view scene or a rendered 3D model."""

    name: str
    """File name relative to the scene folder, or a view label for renders (``view_003``)."""
    pose_c2w: Matrix4 | None = None
    """Camera-to-world 4x4 (OpenGL/NeRF convention: camera looks down -z, y up), if known."""
    intrinsics: Mapping[str, float] | None = None
    """``fx, fy, cx, cy, width, height`` in pixels, if known."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        out["pose_c2w"] = [list(r) for r in self.pose_c2w] if self.pose_c2w is not None else None
        if self.intrinsics is not None:
            out["intrinsics"] = dict(self.intrinsics)
        return out


@dataclass(frozen=True)
class SourceInfo:
    """What a source knows about an input without decoding its frames."""

    id: str
    """The input's path as a string (stable key for records and resume)."""
    kind: str
    """``video``, ``multiview`` or ``render``."""
    num_frames: int
    """Frames (or views) that can really be read: indices run ``0 .. num_frames - 1``."""
    width: int
    """Frame width in pixels after rotation (0 when views differ in size)."""
    height: int
    """Frame height in pixels after rotation (0 when views differ in size)."""
    fps: Fraction | None = None
    """Average frame rate as a Fraction (videos only)."""
    timestamps_s: tuple[float, ...] | None = None
    """Presentation time of every frame in seconds, from the container (videos only)."""
    duration_s: float | None = None
    """Duration in seconds (videos only): from the first frame's timestamp to the end of the
    last frame (its timestamp plus its duration)."""
    keyframe_indices: tuple[int, ...] | None = None
    """Indices of the codec's keyframes, in presentation order (videos only)."""
    views: tuple[ViewInfo, ...] | None = None
    """One entry per view, in index order (scenes and renders)."""
    backend: str = ""
    """Which reader serves the frames (``decord``, ``pyav``, ``pil``, ``raycast`` ...)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Anything else worth reporting (codec, container, rotation, scene centre ...)."""

    def __post_init__(self) -> None:
        if self.num_frames < 0:
            raise ValueError(f"num_frames ({self.num_frames}) must be >= 0")
        if self.timestamps_s is not None and len(self.timestamps_s) != self.num_frames:
            raise ValueError(
                f"timestamps_s has {len(self.timestamps_s)} entries for {self.num_frames} frames"
            )
        if self.views is not None and len(self.views) != self.num_frames:
            raise ValueError(f"views has {len(self.views)} entries for {self.num_frames} frames")

    @property
    def end_s(self) -> float | None:
        """End of the last frame in seconds (videos), on the timestamps' clock."""
        if self.timestamps_s is None or self.duration_s is None or not self.timestamps_s:
            return None
        return self.timestamps_s[0] + self.duration_s

    def time_of(self, index: int) -> float | None:
        """Presentation time of frame ``index`` in seconds, or None when unknown."""
        if self.timestamps_s is None:
            return None
        return self.timestamps_s[index]

    def index_at(self, t_s: float) -> int:
        """The last frame whose presentation time is <= ``t_s`` (videos only)."""
        if self.timestamps_s is None:
            raise ValueError(f"{self.id}: no timestamps to look up t={t_s}s")
        ts = np.asarray(self.timestamps_s)
        i = int(np.searchsorted(ts, t_s + 1e-9, side="right")) - 1
        return max(0, min(i, self.num_frames - 1))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.id,
            "kind": self.kind,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "fps": None if self.fps is None else f"{self.fps.numerator}/{self.fps.denominator}",
            "fps_float": None if self.fps is None else float(self.fps),
            "duration_s": self.duration_s,
            "num_keyframes": None if self.keyframe_indices is None else len(self.keyframe_indices),
            "num_views": None if self.views is None else len(self.views),
            "backend": self.backend,
            **{k: v for k, v in self.extra.items() if _jsonable(v)},
        }

    def __repr__(self) -> str:
        fps = f", fps={float(self.fps):.3f}" if self.fps is not None else ""
        return (
            f"SourceInfo(id={self.id!r}, kind={self.kind!r}, num_frames={self.num_frames}, "
            f"size={self.width}x{self.height}{fps}, backend={self.backend!r})"
        )


@dataclass(frozen=True)
class ClipSpec:
    """A range of one source that is sampled and answered on its own."""

    source: str
    """The source's id."""
    start_frame: int
    """First frame of the clip (inclusive)."""
    end_frame: int
    """One past the last frame of the clip (exclusive)."""
    index: int = 0
    """The clip's number within its source (0 for a whole-source clip)."""
    start_s: float | None = None
    """Start time in seconds (videos)."""
    end_s: float | None = None
    """End time in seconds (videos): the end of the last frame."""
    label: str = "whole"
    """How the clip was made: ``whole``, ``window`` or ``shot``."""

    def __post_init__(self) -> None:
        if self.start_frame < 0:
            raise ValueError(f"start_frame ({self.start_frame}) must be >= 0")
        if self.end_frame <= self.start_frame:
            raise ValueError(
                f"end_frame ({self.end_frame}) must be > start_frame ({self.start_frame})"
            )

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_s": _round(self.start_s),
            "end_s": _round(self.end_s),
        }


@dataclass(frozen=True)
class Selection:
    """What a sampler returns: the chosen indices and what it wants on the record."""

    indices: tuple[int, ...]
    """Chosen frame/view indices (absolute, into the source), in the order to show them."""
    sampler: str
    """The sampler's registry name."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The parameters that, with the source, reproduce this selection."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Sampler-specific facts for the record (shot boundaries, coverage radius ...)."""

    def __post_init__(self) -> None:
        if len(self.indices) == 0:
            raise ValueError("a selection must hold at least one index")
        if any(i < 0 for i in self.indices):
            raise ValueError(f"indices must be >= 0, got {list(self.indices)}")


@dataclass(frozen=True)
class FrameBatch:
    """Decoded frames: ``frames[k]`` is frame ``indices[k]`` of the source."""

    frames: np.ndarray | Sequence[np.ndarray]
    """uint8 array N x H x W x 3 (RGB). For mixed-size scenes, a list of HxWx3 arrays."""
    indices: tuple[int, ...]
    """Index of each frame in the source."""
    timestamps_s: tuple[float | None, ...] | None = None
    """Presentation time of each frame in seconds (videos)."""
    views: tuple[ViewInfo, ...] | None = None
    """View of each frame (scenes and renders)."""

    def __post_init__(self) -> None:
        n = len(self.indices)
        if len(self.frames) != n:
            raise ValueError(f"{len(self.frames)} frames for {n} indices")
        for f in self.frames:
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frames must be uint8 HxWx3, got {f.dtype} {f.shape}")
        if self.timestamps_s is not None and len(self.timestamps_s) != n:
            raise ValueError(f"{len(self.timestamps_s)} timestamps for {n} frames")
        if self.views is not None and len(self.views) != n:
            raise ValueError(f"{len(self.views)} views for {n} frames")

    def __len__(self) -> int:
        return len(self.indices)

    def images(self) -> list[np.ndarray]:
        """The frames as a list of HxWx3 arrays."""
        return [np.asarray(f) for f in self.frames]

    def __repr__(self) -> str:
        shape = (
            "x".join(map(str, self.frames.shape))
            if isinstance(self.frames, np.ndarray)
            else f"{len(self.frames)} mixed-size"
        )
        return f"FrameBatch(frames={shape} uint8, indices={list(self.indices)})"


SkipMode = Literal["none", "nonref", "bidir"]
"""Which frames a signal decoder may drop: ``none`` (decode all), ``nonref`` (frames nothing
references; the default: what it keeps decodes exactly) or ``bidir`` (every B-frame, the
fastest; inexact where other frames refer to B-frames)."""


@dataclass(frozen=True)
class SmallFrames:
    """The cheap signal of a source (``Source.read_signal``): tiny frames and the index of
    each, for shot detection."""

    indices: np.ndarray
    """int64 frame indices (into the source), strictly increasing."""
    frames: np.ndarray
    """uint8 N x h x w x 3 YUV frames (limited range, as decoded), ``frames[k]`` is frame
    ``indices[k]``."""
    errors: int = 0
    """Packets the decoder rejected (a corrupt stretch)."""

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.frames.shape))
        return f"SmallFrames(frames={shape} uint8, errors={self.errors})"


@dataclass(frozen=True)
class VisibleSurface:
    """What each candidate view of a 3D model sees (``Source.visible_surface``), for
    choosing views that cover the surface: the surface cells it shows and how squarely."""

    cells: tuple[np.ndarray, ...]
    """Per candidate view (in index order): the sorted, distinct int64 ids of the surface
    cells it sees. A cell is a voxel of a grid over the object together with the side of the
    surface shown (the dominant axis of the normal, turned to the camera)."""
    weights: tuple[np.ndarray, ...]
    """Per view, one float64 per cell: how squarely the view sees it (``|cos|`` of its best
    hit, 1 = face-on)."""
    resolution: int
    """Width in pixels at which each view was measured."""
    voxels: int
    """Cells per side of the grid over the object."""

    def __len__(self) -> int:
        return len(self.cells)

    def __repr__(self) -> str:
        size = f"resolution={self.resolution}, voxels={self.voxels}"
        return f"VisibleSurface(views={len(self)}, {size})"


@dataclass(frozen=True)
class ClipResult:
    """One record per clip: everything needed to reproduce the frames (and the answer).

    Written as one JSON line by :mod:`framepipe.output`. ``status`` is ``ok`` or ``failed``;
    a failed record carries ``error`` (one line) and whatever was known before the failure.
    Made by :mod:`framepipe.records` (``ok_record``, ``failed_record``) and never changed:
    a later stage derives a new record (``records.derive``, ``records.fail``).
    """

    source: str
    kind: str | None = None
    clip: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None
    indices: list[int] | None = None
    timestamps_s: list[float | None] | None = None
    views: list[dict[str, Any]] | None = None
    frames: list[str] | None = None
    contact_sheet: str | None = None
    selection: dict[str, Any] | None = None
    """Sampler-specific facts (shots, coverage radius ...)."""
    model: dict[str, Any] | None = None
    prompt: str | None = None
    questions: list[str] | None = None
    answers: list[str] | None = None
    truncated: list[bool | None] | None = None
    """Per answer: whether it stopped at the token limit (``max_new_tokens``) rather than
    ending itself; None where the backend could not tell (a server that sent no
    ``finish_reason``)."""
    generation: dict[str, Any] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    key: str | None = None
    """A digest of the inputs and settings, used to skip finished clips on a re-run."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as written: its fields, then ``extra``'s, times rounded
        (:func:`round_times`)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "extra":
                out.update(value)
                continue
            out[name] = value
        return round_times(out)


TIME_DIGITS = 6
"""Times in records are rounded to microseconds."""

_PLAIN = frozenset({str, int, bool, type(None)})
"""Values :func:`round_times` returns as they are (checked without a call: it runs on every
value of every record a run writes)."""


def round_times(value: Any, *, timed: bool = False) -> Any:
    """``value`` with every number that is a time rounded to :data:`TIME_DIGITS` decimals: a
    time is a float under a key ending in ``_s`` (``start_s``, ``timestamps_s``,
    ``timings_s`` ...), at any depth of dicts, lists and tuples. The one rounding rule of
    records (:meth:`ClipResult.to_json`)."""
    if isinstance(value, float):
        return round(float(value), TIME_DIGITS) if timed else value
    if isinstance(value, dict):
        return {
            k: v
            if type(v) in _PLAIN
            else round_times(v, timed=timed or (isinstance(k, str) and k.endswith("_s")))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [v if type(v) in _PLAIN else round_times(v, timed=timed) for v in value]
    if type(value) is tuple:
        return tuple(round_times(v, timed=timed) for v in value)
    return value


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(float(x), nd)


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict)) and not (
        isinstance(v, float) and math.isnan(v)
    )


def timestamps_to_list(ts: Sequence[float | None] | None) -> list[float | None] | None:
    if ts is None:
        return None
    return [_round(t) for t in ts]


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (... x 3) to limited-range BT.601 YUV uint8, like a decoder's output."""
    x = rgb.astype(np.float32)
    m = (
        np.array(
            [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
            dtype=np.float32,
        )
        / 255.0
    )
    yuv = x @ m.T + np.array([16.0, 128.0, 128.0], dtype=np.float32)
    return np.clip(yuv + 0.5, 0, 255).astype(np.uint8)
