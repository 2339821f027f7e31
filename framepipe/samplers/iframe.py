"""The iframe sampler: the codec's own keyframes nearest to n evenly spaced targets; almost
free (the keyframes are in ``SourceInfo``, nothing is decoded)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.samplers.base import DEFAULT_OVERFLOW, apply_overflow, check_args, register_sampler
from framepipe.samplers.uniform import uniform_indices
from framepipe.types import ClipSpec, Selection, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"overflow": DEFAULT_OVERFLOW}
"""The options, with their defaults."""
check_iframe = functools.partial(check_args, "iframe", known=DEFAULTS)
"""The iframe sampler's check of its settings (``check_iframe(n, params)``)."""


def nearest_distinct(targets: list[int], candidates: list[int]) -> list[int]:
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
        pos = np.arange(m)
        where = np.where(prev == best, pos, 0)
        where = np.maximum.accumulate(where)
        dp[i] = best + cost[i]
        arg[i] = where - 1  # prev[p] is dp[i - 1][p - 1]
    j = int(np.argmin(dp[-1]))
    out = [j]
    for i in range(k - 1, 0, -1):
        j = int(arg[i][j])
        out.append(j)
    return [int(c[j]) for j in reversed(out)]


def iframe(
    info: SourceInfo,
    clip: ClipSpec,
    *,
    n: int,
    source: Source | None = None,
    **params: Any,
) -> Selection:
    """The codec keyframes nearest to n evenly spaced targets (distinct). When the clip
    holds fewer keyframes than n, all of them, completed with the targets themselves.
    ``params``: ``overflow`` only."""
    check_iframe(n, params)
    overflow = params.get("overflow", DEFAULTS["overflow"])
    targets = uniform_indices(clip.start_frame, clip.end_frame, n)
    keys = sorted(
        {int(k) for k in (info.keyframe_indices or ()) if clip.start_frame <= k < clip.end_frame}
    )
    if len(keys) >= len(targets):
        idx = nearest_distinct(targets, keys)
        filled = 0
    else:
        idx = list(keys)
        for t in targets:
            if len(idx) >= len(targets):
                break
            if t not in idx:
                idx.append(t)
        filled = len(idx) - len(keys)
        idx.sort()
    idx = apply_overflow(idx, n, overflow, clip, info.id)
    extra = {"keyframes_in_clip": len(keys), "non_keyframes": filled}
    if not keys:
        log.debug("%s: no keyframe in clip %d; evenly spaced frames", info.id, clip.index)
    return Selection(tuple(idx), "iframe", {"n": n, "overflow": overflow}, extra)


register_sampler("iframe", defaults=DEFAULTS, check=check_iframe)(iframe)


__all__ = ["iframe", "nearest_distinct"]
