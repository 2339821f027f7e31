"""The uniform sampler: n frames spread evenly over a clip, or frames at a fixed rate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

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
Num = TypeVar("Num", int, float)


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

    Uses the container's timestamps, so variable frame rate is right. The rate gives the frame
    showing at each of its times (a frame shown at several of them once). When those are more
    than n frames, n of them are taken: the ones nearest in time to n of the rate's times
    taken evenly (the cap keeps the whole clip covered rather than its beginning).
    """
    if info.timestamps_s is None:
        # No clock (scenes, renders): one view per 1/fps "seconds" makes no sense.
        raise SamplingError(f"{info.id}: --fps needs a video with timestamps")
    ts = np.asarray(info.timestamps_s[clip.start_frame : clip.end_frame])
    t0 = float(ts[0])
    t_end = clip.end_s if clip.end_s is not None else float(ts[-1]) + 1e-9
    times = t0 + np.arange(0, max(1, math.ceil((t_end - t0) * fps - 1e-9))) / fps
    times = times[times < t_end]
    # the frame showing at time t: last frame whose timestamp <= t
    pos = np.searchsorted(ts, times + 1e-9, side="right") - 1
    pos = np.clip(pos, 0, len(ts) - 1)
    # each frame once, at the first of the rate's times that shows it
    frames, first = np.unique(pos, return_index=True)
    if len(frames) > n:
        even = np.floor((np.arange(n) + 0.5) * len(times) / n).astype(np.int64)
        if len(np.unique(pos[even])) == n:  # n frames already: no two times show one frame
            frames = pos[even]
        else:
            picked = nearest_distinct(times[even].tolist(), times[first].tolist())
            frames = frames[np.searchsorted(times[first], picked)]
    return [clip.start_frame + int(p) for p in frames]


def nearest_distinct(targets: Sequence[float], candidates: Sequence[Num]) -> list[Num]:
    """For sorted ``targets`` (k) and sorted distinct ``candidates`` (>= k), the k distinct
    candidates, in order, that minimise the total distance to the targets (dynamic
    programming over monotone matchings)."""
    t = np.asarray(targets, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    k, m = len(t), len(c)
    cost = np.abs(t[:, None] - c[None, :])
    dp = np.full((k, m), np.inf)
    arg = np.zeros((k, m), dtype=np.int64)
    dp[0] = cost[0]
    for i in range(1, k):
        prev = np.full(m, np.inf)
        prev[1:] = dp[i - 1][:-1]
        # running minimum of prev and where it came from
        best = np.minimum.accumulate(prev)
        where = np.maximum.accumulate(np.where(prev == best, np.arange(m), 0))
        dp[i] = best + cost[i]
        arg[i] = where - 1  # prev[p] is dp[i - 1][p - 1]
    j = int(np.argmin(dp[-1]))
    out = [j]
    for i in range(k - 1, 0, -1):
        j = int(arg[i][j])
        out.append(j)
    return [candidates[j] for j in reversed(out)]


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
