"""Cut a source into clips: the whole source (default) or fixed windows in seconds.

Shot-based clips (``--clips shots``) are planned by the keyframe module, which registers a
planner here under the name ``shots``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.errors import ConfigError
from framepipe.types import ClipSpec, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

ClipPlanner = Callable[..., list[ClipSpec]]
_PLANNERS: dict[str, ClipPlanner] = {}


def register_clip_planner(name: str) -> Callable[[ClipPlanner], ClipPlanner]:
    def deco(fn: ClipPlanner) -> ClipPlanner:
        _PLANNERS[name] = fn
        return fn

    return deco


def whole_clip(info: SourceInfo) -> ClipSpec:
    """The whole source as one clip."""
    end_s = info.end_s
    start_s = info.time_of(0) if info.num_frames else None
    return ClipSpec(info.id, 0, max(1, info.num_frames), 0, start_s, end_s, "whole")


def window_clips(
    info: SourceInfo, clip_seconds: float, stride_seconds: float | None = None
) -> list[ClipSpec]:
    """Windows of ``clip_seconds`` every ``stride_seconds`` (default: back to back).

    Boundaries are placed in presentation time, so variable frame rate video gets windows of
    equal duration, not of equal frame count. A last window shorter than half a window is
    merged into the previous one; a source shorter than one window is one clip.
    """
    if clip_seconds <= 0 or not math.isfinite(clip_seconds):
        raise ConfigError(f"--clip-seconds ({clip_seconds}) must be > 0")
    stride = clip_seconds if stride_seconds is None else stride_seconds
    if stride <= 0 or not math.isfinite(stride):
        raise ConfigError(f"--stride-seconds ({stride}) must be > 0")
    if info.timestamps_s is None or info.duration_s is None:
        return [whole_clip(info)]
    ts = np.asarray(info.timestamps_s)
    t0 = float(ts[0])
    t_end = max(t0 + float(info.duration_s), float(ts[-1]))  # duration_s runs from ts[0]
    clips: list[ClipSpec] = []
    k = 0
    start_t = t0
    while start_t < t_end - 1e-9:
        end_t = min(start_t + clip_seconds, t_end)
        remaining_after = t_end - end_t
        if 0 < remaining_after < clip_seconds / 2 and stride >= clip_seconds:
            end_t = t_end  # fold a short tail into this window
        s = int(np.searchsorted(ts, start_t - 1e-9, side="left"))
        e = int(np.searchsorted(ts, end_t - 1e-9, side="left")) if end_t < t_end else len(ts)
        if e > s:
            clips.append(ClipSpec(info.id, s, e, k, start_t, end_t, "window"))
            k += 1
        if end_t >= t_end:
            break
        start_t += stride
    return clips or [whole_clip(info)]


def plan_clips(
    info: SourceInfo,
    *,
    mode: str = "whole",
    clip_seconds: float | None = None,
    stride_seconds: float | None = None,
    source: Source | None = None,
    **params: Any,
) -> list[ClipSpec]:
    """The clips of one source. ``mode``: ``whole``, ``windows`` (implied by
    ``clip_seconds``) or a registered planner such as ``shots``."""
    if clip_seconds is not None and mode == "whole":
        mode = "windows"
    if mode == "whole":
        return [whole_clip(info)]
    if mode == "windows":
        if clip_seconds is None:
            raise ConfigError("--clips windows needs --clip-seconds")
        return window_clips(info, clip_seconds, stride_seconds)
    if mode not in _PLANNERS:
        import importlib

        with contextlib.suppress(ImportError):
            importlib.import_module("framepipe.samplers.keyframe")
    if mode in _PLANNERS:
        return _PLANNERS[mode](info, source=source, **params)
    raise ConfigError(f"unknown clip mode {mode!r}; known: whole, windows, {', '.join(_PLANNERS)}")
