"""The iframe sampler: the codec's own keyframes nearest to n evenly spaced targets; almost
free (the keyframes are in ``SourceInfo``, nothing is decoded)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from framepipe.samplers.base import DEFAULT_OVERFLOW, apply_overflow, check_args, register_sampler
from framepipe.samplers.uniform import nearest_distinct, uniform_indices
from framepipe.types import ClipSpec, Selection, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"overflow": DEFAULT_OVERFLOW}
"""The options, with their defaults."""
check_iframe = functools.partial(check_args, "iframe", known=DEFAULTS)
"""The iframe sampler's check of its settings (``check_iframe(n, params)``)."""


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
