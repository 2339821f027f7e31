"""Cut a source into clips: the whole source (default), fixed windows in seconds, or its
shots (``--clips shots``: every shot a clip, from :func:`framepipe.shots.detect_shots`,
merged up to ``min_shot_s`` and split at ``max_shot_s``).

Clip planning sits above the shot stage (:mod:`framepipe.shots`) and beside the samplers;
it never imports them. Other planners are registered with :func:`register_clip_planner`.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.errors import ConfigError, FramepipeError, did_you_mean, one_line_error
from framepipe.registry import CHECK_ATTRIBUTE, Registry, run_check
from framepipe.shots import DetectorParams, checked_params, detect_shots
from framepipe.types import ClipSpec, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)

ClipPlanner = Callable[..., list[ClipSpec]]
"""``planner(info, *, source=None, **params) -> list[ClipSpec]``: the clips of one source."""

CLIP_PLANNERS: Registry[ClipPlanner] = Registry(
    "clip mode",
    {"whole": __name__, "windows": __name__, "shots": __name__},
    entry_point_group="framepipe.clip_planners",
)
"""Clip planners by name (``--clips``): the built-ins below and installed plug-ins."""


def register_clip_planner(
    name: str,
    *,
    check: Callable[..., object] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[ClipPlanner], ClipPlanner]:
    """Decorator: register a clip planner under ``name``. ``check(**params)``: the planner's
    own check of its settings (the first thing it does), which a run also calls before any
    input is read (:func:`check_clips`). ``defaults``: the value each option it reads from
    ``**params`` has when it is not given (those of its keyword parameters are read from its
    signature): an option given at its default makes the same resume keys as none."""
    register: Callable[[ClipPlanner], ClipPlanner] = CLIP_PLANNERS.register(
        name, check=check, defaults=defaults
    )
    return register


def _no_params(mode: str, params: dict[str, Any]) -> None:
    if params:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(sorted(params))} for --clips {mode} "
            "(--clip-opt applies to planners that take options, such as shots)"
        )


def whole_clip(info: SourceInfo) -> ClipSpec:
    """The whole source as one clip."""
    end_s = info.end_s
    start_s = info.time_of(0) if info.num_frames else None
    return ClipSpec(info.id, 0, max(1, info.num_frames), 0, start_s, end_s, "whole")


def check_windows(
    clip_seconds: float | None = None, stride_seconds: float | None = None, **params: Any
) -> None:
    """The windows planner's check: a window length, and lengths that are > 0 seconds."""
    _no_params("windows", params)
    if clip_seconds is None:
        raise ConfigError("--clips windows needs --clip-seconds")
    for name, value in (("--clip-seconds", clip_seconds), ("--stride-seconds", stride_seconds)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # "10": not a length
            raise ConfigError(f"{name} ({value!r}) must be a number of seconds > 0")
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name} ({value}) must be > 0")


def window_clips(
    info: SourceInfo, clip_seconds: float, stride_seconds: float | None = None
) -> list[ClipSpec]:
    """Windows of ``clip_seconds`` every ``stride_seconds`` (default: back to back).

    Boundaries are placed in presentation time, so variable frame rate video gets windows of
    equal duration, not of equal frame count. A last window shorter than half a window is
    merged into the previous one; a source shorter than one window is one clip.
    """
    check_windows(clip_seconds=clip_seconds, stride_seconds=stride_seconds)
    stride = clip_seconds if stride_seconds is None else stride_seconds
    if info.timestamps_s is None or info.duration_s is None:
        return [whole_clip(info)]
    ts = np.asarray(info.timestamps_s)
    t0 = float(ts[0])
    t_end = max(t0 + float(info.duration_s), float(ts[-1]))  # duration_s runs from ts[0]
    clips: list[ClipSpec] = []
    k = 0
    for step in itertools.count():
        start_t = t0 + step * stride  # not a running sum: its rounding would add a window
        if start_t >= t_end - 1e-9:
            break
        end_t = start_t + clip_seconds
        if end_t >= t_end - 1e-9:
            end_t = t_end
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
    return clips or [whole_clip(info)]


# -- shots as clips -----------------------------------------------------------------------
def shot_ranges(
    shots: list[tuple[int, int]],
    timestamps_s: Any,
    end_s: float | None,
    *,
    min_shot_s: float,
    max_shot_s: float | None,
) -> list[tuple[int, int]]:
    """Merge shots shorter than ``min_shot_s`` into a neighbour (the shorter one), then split
    shots longer than ``max_shot_s`` into equal parts."""
    if not shots:
        return []
    ts = np.asarray(timestamps_s, dtype=np.float64)
    last_end = end_s if end_s is not None else float(ts[-1])

    def dur(a: int, b: int) -> float:
        tb = ts[b] if b < len(ts) else last_end
        return float(tb - ts[a])

    spans = [list(s) for s in shots]
    while len(spans) > 1:
        durs = [dur(a, b) for a, b in spans]
        i = int(np.argmin(durs))
        if durs[i] >= min_shot_s:
            break
        if i == 0:
            j = 1
        elif i == len(spans) - 1:
            j = i - 1
        else:
            j = i - 1 if durs[i - 1] <= durs[i + 1] else i + 1
        a, b = min(spans[i][0], spans[j][0]), max(spans[i][1], spans[j][1])
        lo = min(i, j)
        spans[lo : lo + 2] = [[a, b]]
    out: list[tuple[int, int]] = []
    for a, b in spans:
        d = dur(a, b)
        parts = 1 if not max_shot_s or d <= max_shot_s else int(np.ceil(d / max_shot_s))
        if parts == 1:
            out.append((a, b))
            continue
        t0 = ts[a]
        cuts = [a]
        for p in range(1, parts):
            i = int(np.searchsorted(ts, t0 + d * p / parts - 1e-9))
            if cuts[-1] < i < b:
                cuts.append(i)
        cuts.append(b)
        out += list(itertools.pairwise(cuts))
    return out


def shot_limits(
    min_shot_s: float = 2.0, max_shot_s: float | None = 30.0, **params: Any
) -> tuple[float, float | None]:
    """The shots planner's check: ``min_shot_s`` and ``max_shot_s`` (in seconds; None, 0,
    ``none`` or ``inf``: no split) and the shot detector's settings ``params``; the two
    limits."""
    checked_params(params)
    try:
        min_s = float(min_shot_s)
        max_s = None if max_shot_s in (None, 0, "none", "None") else float(max_shot_s)
    except (TypeError, ValueError):
        raise ConfigError(
            f"min_shot_s ({min_shot_s!r}) and max_shot_s ({max_shot_s!r}) must be numbers"
        ) from None
    if max_s == math.inf:
        max_s = None
    if not (math.isfinite(min_s) and min_s >= 0):  # NaN passes < and <=
        raise ConfigError(f"min_shot_s ({min_s}) must be >= 0 (a finite number)")
    if max_s is not None and not (math.isfinite(max_s) and max_s > 0):
        raise ConfigError(f"max_shot_s ({max_s}) must be > 0 (0, none or inf: no split)")
    if max_s is not None and min_s > max_s:
        raise ConfigError(f"min_shot_s ({min_s}) must not exceed max_shot_s ({max_s})")
    return min_s, max_s


_SHOT_DETECTOR_DEFAULTS = {
    k: v for k, v in asdict(DetectorParams()).items() if k not in ("min_shot_s", "max_shot_s")
}
"""The shot detector's settings, which the shots planner hands on (``min_shot_s`` and
``max_shot_s`` are its own, with its own defaults)."""


@register_clip_planner("shots", check=shot_limits, defaults=_SHOT_DETECTOR_DEFAULTS)
def plan_shot_clips(
    info: SourceInfo,
    *,
    source: Source | None = None,
    min_shot_s: float = 2.0,
    max_shot_s: float | None = 30.0,
    **params: Any,
) -> list[ClipSpec]:
    """Every shot of the video a clip (label ``shot``), merged up to ``min_shot_s`` and split
    at ``max_shot_s`` seconds. ``params`` are shot detector settings."""
    min_s, max_s = shot_limits(min_shot_s, max_shot_s, **params)
    if source is None or info.timestamps_s is None or info.num_frames < 2:
        return [whole_clip(info)]
    det = detect_shots(source, info, **params)
    spans = shot_ranges(
        det.shots, info.timestamps_s, info.end_s, min_shot_s=min_s, max_shot_s=max_s
    )
    ts = info.timestamps_s
    clips: list[ClipSpec] = []
    for k, (a, b) in enumerate(spans):
        end_s = ts[b] if b < len(ts) else info.end_s
        clips.append(ClipSpec(info.id, a, b, k, ts[a], end_s, "shot"))
    return clips or [whole_clip(info)]


def check_whole(**params: Any) -> None:
    """The whole planner's check: it takes no option."""
    _no_params("whole", params)


@register_clip_planner("whole", check=check_whole)
def plan_whole(info: SourceInfo, *, source: Source | None = None, **params: Any) -> list[ClipSpec]:
    """The whole source as one clip."""
    check_whole(**params)
    return [whole_clip(info)]


@register_clip_planner("windows", check=check_windows)
def plan_windows(
    info: SourceInfo,
    *,
    source: Source | None = None,
    clip_seconds: float | None = None,
    stride_seconds: float | None = None,
    **params: Any,
) -> list[ClipSpec]:
    """Windows of ``clip_seconds`` every ``stride_seconds`` (see :func:`window_clips`)."""
    check_windows(clip_seconds, stride_seconds, **params)
    assert clip_seconds is not None
    return window_clips(info, clip_seconds, stride_seconds)


def planner_params(
    mode: str, clip_seconds: float | None, stride_seconds: float | None, params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The planner a run uses and what it is given: ``clip_seconds`` implies ``windows``,
    which gets ``clip_seconds`` and ``stride_seconds``; other planners take neither."""
    if clip_seconds is not None and mode == "whole":
        mode = "windows"
    if mode == "windows":
        return mode, {"clip_seconds": clip_seconds, "stride_seconds": stride_seconds, **params}
    for name, value in (("--clip-seconds", clip_seconds), ("--stride-seconds", stride_seconds)):
        if value is not None:
            raise ConfigError(f"{name} applies to --clips windows, not to --clips {mode}")
    return mode, params


def check_clips(
    mode: str = "whole",
    clip_seconds: float | None = None,
    stride_seconds: float | None = None,
    **params: Any,
) -> None:
    """ConfigError (one line) when the clips cannot be planned with these settings: an
    unknown planner, or what the planner's own check refuses; a planner registered without
    ``check`` has ``params`` checked against its keyword parameters (one it does not take
    is refused, unless it takes ``**params``). Called before any input is read."""
    mode, params = planner_params(mode, clip_seconds, stride_seconds, params)
    planner = CLIP_PLANNERS.get(mode)
    check = getattr(planner, CHECK_ATTRIBUTE, None)
    if check is not None:
        run_check(CLIP_PLANNERS.family, mode, check, **params)
        return
    try:
        sig = inspect.signature(planner)
    except (TypeError, ValueError):  # no signature to read: nothing to check against
        return
    kinds = [p.kind for p in sig.parameters.values()]
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    options = [p.name for p in list(sig.parameters.values())[1:] if p.kind in keyword]
    options = [o for o in options if o != "source"]
    unknown = sorted(k for k in params if k not in options)
    if unknown and inspect.Parameter.VAR_KEYWORD not in kinds:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for --clips {mode} "
            f"(its options: {', '.join(options) or 'none'})" + did_you_mean(unknown, options)
        )


def planner_of(mode: str) -> ClipPlanner:
    """The clip planner ``mode`` names."""
    return CLIP_PLANNERS.get(mode)


def plan_clips(
    info: SourceInfo,
    *,
    mode: str = "whole",
    clip_seconds: float | None = None,
    stride_seconds: float | None = None,
    source: Source | None = None,
    **params: Any,
) -> list[ClipSpec]:
    """The clips of one source. ``mode``: a registered planner (``whole``, ``windows``,
    ``shots`` or a plug-in); ``clip_seconds`` implies ``windows``, which is given
    ``clip_seconds`` and ``stride_seconds``; ``params`` go to the planner."""
    mode, params = planner_params(mode, clip_seconds, stride_seconds, params)
    try:
        clips = CLIP_PLANNERS.get(mode)(info, source=source, **params)
    except FramepipeError:
        raise
    except Exception as exc:  # a plug-in's bug: one line naming it (traceback at DEBUG)
        log.debug("%s: clip planner %r failed", info.id, mode, exc_info=True)
        raise FramepipeError(f"clip planner {mode!r} failed: {one_line_error(exc)}") from exc
    end = max(1, info.num_frames)  # (the whole of a source without frames is one clip)
    wrong = (
        [c for c in clips if not isinstance(c, ClipSpec) or c.end_frame > end]
        if isinstance(clips, list)
        else [clips]
    )
    if wrong:
        raise FramepipeError(
            f"clip planner {mode!r} returned {repr(wrong[0])[:200]}, not a list of clips "
            f"within frames 0..{end}"
        )
    seen: set[tuple[int, int, str]] = set()
    for c in clips:  # a clip's resume key is its range and label: one record for both
        if (c.start_frame, c.end_frame, c.label) in seen:
            raise FramepipeError(
                f"clip planner {mode!r} planned frames {c.start_frame}..{c.end_frame} "
                f"({c.label!r}) twice"
            )
        seen.add((c.start_frame, c.end_frame, c.label))
    return clips
