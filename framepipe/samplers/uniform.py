"""The uniform sampler: n frames spread evenly over a clip, or frames at a fixed rate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from framepipe.errors import SamplingError
from framepipe.samplers.base import (
    DEFAULT_OVERFLOW,
    OverflowPolicy,
    apply_overflow,
    check_args,
    check_n,
    register_sampler,
)
from framepipe.types import ClipSpec, Selection, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

UniformMode = Literal["centers", "endpoints"]
OPTIONS = ("mode", "fps", "overflow")


def uniform_indices(start: int, end: int, n: int, *, mode: UniformMode = "centers") -> list[int]:
    """n indices in ``[start, end)``; pure index arithmetic.

    ``centers``: the centre frame of each of n equal segments (never the very first or last
    frame, which are often black or a transition). ``endpoints``: evenly spaced including the
    first and the last frame. When n exceeds the frames, every frame once.
    """
    check_n(n)
    length = end - start
    if length <= 0:
        raise SamplingError(f"empty clip [{start}, {end})")
    if n >= length:
        return list(range(start, end))
    if mode == "centers":
        # centre of segment k is (k + 0.5) * length / n; floor keeps it inside the segment.
        pos = (np.arange(n) + 0.5) * (length / n)
        idx = np.floor(pos).astype(np.int64)
    elif mode == "endpoints":
        if n == 1:
            idx = np.array([(length - 1) // 2])
        else:
            idx = np.round(np.linspace(0, length - 1, n)).astype(np.int64)
    else:
        raise SamplingError(f"unknown uniform mode {mode!r} (centers or endpoints)")
    return [start + int(i) for i in idx]


def rate_indices(info: SourceInfo, clip: ClipSpec, fps: float, n: int) -> list[int]:
    """Frames every ``1/fps`` seconds of presentation time, from the clip's start, capped at n
    (``fps`` checked by :func:`check_uniform`).

    Uses the container's timestamps, so variable frame rate is right. When the rate gives
    more than n frames, n of those times are taken evenly (the cap keeps the whole clip
    covered rather than its beginning).
    """
    if info.timestamps_s is None:
        # No clock (scenes, renders): one view per 1/fps "seconds" makes no sense.
        raise SamplingError(f"{info.id}: --fps needs a video with timestamps")
    ts = np.asarray(info.timestamps_s[clip.start_frame : clip.end_frame])
    t0 = float(ts[0])
    t_end = clip.end_s if clip.end_s is not None else float(ts[-1]) + 1e-9
    times = t0 + np.arange(0, max(1, math.ceil((t_end - t0) * fps - 1e-9))) / fps
    times = times[times < t_end]
    if len(times) > n:
        times = times[np.floor((np.arange(n) + 0.5) * len(times) / n).astype(np.int64)]
    # the frame showing at time t: last frame whose timestamp <= t
    pos = np.searchsorted(ts, times + 1e-9, side="right") - 1
    pos = np.clip(pos, 0, len(ts) - 1)
    out: list[int] = []
    for p in pos:
        i = clip.start_frame + int(p)
        if not out or out[-1] != i:
            out.append(i)
    return out


def check_uniform(n: int, params: Mapping[str, Any]) -> None:
    """The uniform sampler's check of its settings: n, its options, ``mode`` and ``fps``."""
    check_args("uniform", n, params, OPTIONS)
    mode = params.get("mode", "centers")
    if mode not in get_args(UniformMode):
        raise SamplingError(f"unknown uniform mode {mode!r} (centers or endpoints)")
    fps = params.get("fps")
    if fps is not None:
        try:
            ok = float(fps) > 0 and math.isfinite(float(fps))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise SamplingError(f"fps ({fps}) must be > 0")


@register_sampler("uniform", check=check_uniform)
def uniform(
    info: SourceInfo,
    clip: ClipSpec,
    *,
    n: int,
    source: Source | None = None,
    mode: UniformMode = "centers",
    fps: float | None = None,
    overflow: OverflowPolicy = DEFAULT_OVERFLOW,
    **unknown: Any,
) -> Selection:
    """n frames at the centres of n equal segments (default), evenly spaced including both
    ends (``mode="endpoints"``), or one every ``1/fps`` seconds capped at n (``fps``)."""
    check_uniform(n, {"mode": mode, "fps": fps, "overflow": overflow, **unknown})
    if fps is not None:
        idx = rate_indices(info, clip, float(fps), n)
        params: dict[str, Any] = {"n": n, "fps": float(fps), "overflow": overflow}
        # a rate is an upper bound on density; fewer frames than n is the point.
        return Selection(tuple(idx), "uniform", params)
    idx = uniform_indices(clip.start_frame, clip.end_frame, n, mode=mode)
    idx = apply_overflow(idx, n, overflow, clip, info.id)
    return Selection(tuple(idx), "uniform", {"n": n, "mode": mode, "overflow": overflow})
