"""Shot-aware samplers and shot clips.

- ``keyframe``: detects the shots of a clip (see :mod:`framepipe.samplers._shots`) and spreads
  n frames over them: every shot gets a frame while n allows (the longest shots first when
  shots outnumber n), further frames go to the shot whose frames each cover the most time
  (so long shots get frames in proportion to their length), and within a shot (or a part of
  a long one) the chosen frame is a sharp, representative one away from fades and dissolves.
- ``iframe``: the codec's own keyframes nearest to n evenly spaced targets; almost free.
- the ``shots`` clip planner (``--clips shots``): every shot a clip, merged up to
  ``min_shot_s`` and split at ``max_shot_s``.

Detection results are cached per open source, so ``--clips shots --sampler keyframe`` detects
once per video.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.clips import register_clip_planner
from framepipe.errors import ConfigError, SamplingError
from framepipe.samplers._shots import (
    DetectorParams,
    ShotDetection,
    compute_features,
    detect,
    pair_distance,
    steps,
)
from framepipe.samplers.base import OverflowPolicy, apply_overflow, check_n, register_sampler
from framepipe.samplers.uniform import uniform_indices
from framepipe.types import ClipSpec, Selection, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources._signal import SmallFrames
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], ShotDetection]] = (
    weakref.WeakKeyDictionary()
)


def _params_key(p: DetectorParams) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in p.to_json().items()))


def detect_shots(
    source: Source,
    info: SourceInfo | None = None,
    start: int = 0,
    end: int | None = None,
    **params: Any,
) -> ShotDetection:
    """Detect the shots of frames ``[start, end)`` of ``source`` (default: all of it).

    ``params`` are :class:`~framepipe.samplers._shots.DetectorParams` fields. Videos are read
    through the fast signal decoder; other kinds of source through ``source.read_small``.
    """
    info = info or source.info()
    end = info.num_frames if end is None else end
    if not 0 <= start < end <= info.num_frames:
        raise SamplingError(f"{info.id}: range [{start}, {end}) outside 0..{info.num_frames}")
    p = DetectorParams.from_params(params)
    key = _params_key(p)
    try:
        cache = _CACHE.setdefault(source, {})
    except TypeError:  # a source that cannot be weakly referenced: no cache
        cache = {}
    for (s, e, k), det in cache.items():
        if k == key and s <= start and end <= e:
            return det if (s, e) == (start, end) else det.restrict(start, end)
    det = _detect_uncached(source, info, start, end, p)
    cache[(start, end, key)] = det
    return det


def _detect_uncached(
    source: Source, info: SourceInfo, start: int, end: int, p: DetectorParams
) -> ShotDetection:
    from framepipe.sources import _signal

    fps = float(info.fps) if info.fps else 25.0
    if info.kind == "video" and info.timestamps_s is not None and _is_file(source):
        signal = _signal.read_signal(source.path, info, start, end, size=p.size, skip=p.skip)

        def refine(ranges: Any) -> SmallFrames:
            return _signal.read_full_ranges(source.path, info, ranges, size=p.size)

        det = detect(signal, start=start, end=end, fps=fps, params=p, refine=refine)
        det.stats["decode_errors"] = signal.errors
    else:
        small = _signal.rgb_to_yuv(source.read_small(start, end, size=p.size))
        signal = _signal.SmallFrames(np.arange(start, end, dtype=np.int64), small)
        det = detect(signal, start=start, end=end, fps=fps, params=p)
    log.debug("%s: shots in [%d, %d): %s", info.id, start, end, det.stats)
    return det


def _is_file(source: Source) -> bool:
    try:
        return source.path.is_file()
    except (AttributeError, OSError):
        return False


def _split_detector_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = set(DetectorParams.__dataclass_fields__)
    det = {k: v for k, v in params.items() if k in names}
    rest = {k: v for k, v in params.items() if k not in names}
    return det, rest


# -- the keyframe sampler -----------------------------------------------------------------


def allocate(lengths: list[int], n: int) -> list[int]:
    """Frames per shot: one each to the longest shots while n allows (ties: earlier shot),
    then one at a time to the shot whose frames each cover the most frames (ties: earlier),
    never more frames than a shot has."""
    k = len(lengths)
    alloc = [0] * k
    order = sorted(range(k), key=lambda i: (-lengths[i], i))
    for i in order[: min(n, k)]:
        alloc[i] = 1
    left = n - sum(alloc)
    while left > 0:
        best = -1
        best_v = -1.0
        for i in range(k):
            if alloc[i] < lengths[i]:
                v = lengths[i] / alloc[i] if alloc[i] else float("inf")
                if v > best_v:
                    best, best_v = i, v
        if best < 0:
            break
        alloc[best] += 1
        left -= 1
    return alloc


def _choose_in_shot(
    det: ShotDetection, s: int, e: int, k: int, excluded: np.ndarray, motion: np.ndarray
) -> list[int]:
    """k frames of shot ``[s, e)``: the best-scoring decoded frame of each of k equal parts
    of the shot (its usable part: no fade, dissolve or black frame when avoidable)."""
    f = det.features
    rows = np.flatnonzero((f.indices >= s) & (f.indices < e))
    good = rows[~excluded[rows]] if len(rows) else rows
    if len(good) == 0:
        good = rows
    if len(good):
        lo, hi = int(f.indices[good[0]]), int(f.indices[good[-1]]) + 1
    else:
        lo, hi = s, e
    out: list[int] = []
    if len(good):
        mean_grid = f.grid[good].mean(axis=0)
        rep = np.abs(f.grid[good] - mean_grid).mean(axis=1)
    for part in range(k):
        a = lo + (hi - lo) * part // k
        b = max(a + 1, lo + (hi - lo) * (part + 1) // k)
        sel: np.ndarray = (
            np.flatnonzero((f.indices[good] >= a) & (f.indices[good] < b))
            if len(good)
            else np.zeros(0, np.int64)
        )
        if len(sel) == 0:
            out.append(min(e - 1, max(s, (a + b - 1) // 2)))
            continue
        cand = good[sel]
        centre = (a + b - 1) / 2.0
        width = max(1.0, (b - a) / 2.0)
        score = (
            0.35 * _rank01(f.sharpness[cand])
            + 0.25 * _rank01(-rep[sel])
            + 0.2 * _rank01(-motion[cand])
            + 0.2 * (1.0 - np.abs(f.indices[cand] - centre) / width)
        )
        best = int(cand[int(np.argmax(score))])  # argmax: first (lowest index) on ties
        out.append(int(f.indices[best]))
    return sorted(set(out)) if len(set(out)) == len(out) else _fill_unique(out, s, e)


def _fill_unique(idx: list[int], s: int, e: int) -> list[int]:
    out = sorted(set(idx))
    for i in uniform_indices(s, e, len(idx)):
        if len(out) >= len(idx):
            break
        if i not in out:
            out.append(i)
    return sorted(out)


def _rank01(x: np.ndarray) -> np.ndarray:
    """Ranks scaled to 0..1 (equal values share the lower rank); 1 for a single value."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) <= 1:
        return np.ones(len(x))
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    # equal values: same rank
    uniq, inv = np.unique(x, return_inverse=True)
    first = np.full(len(uniq), np.inf)
    np.minimum.at(first, inv, ranks)
    return np.asarray(first[inv] / (len(x) - 1))


def select_from_shots(det: ShotDetection, n: int) -> tuple[list[int], list[int]]:
    """n frame indices spread over the shots of ``det`` and the shot number of each."""
    shots = det.shots
    lengths = [e - s for s, e in shots]
    alloc = allocate(lengths, n)
    f = det.features
    excluded = f.luma_mean < det.params.dark_level
    if not excluded.all():
        pass
    else:
        excluded = np.zeros(len(f), dtype=bool)
    for t in det.transitions:
        if t.kind != "cut":
            excluded |= (f.indices >= t.start_frame) & (f.indices < t.end_frame)
    st = steps(f)
    motion = np.maximum(st, np.concatenate([st[1:], [0.0]])) if len(st) else st
    idx: list[int] = []
    shot_of: list[int] = []
    for number, ((s, e), k) in enumerate(zip(shots, alloc)):
        if k == 0:
            continue
        chosen = _choose_in_shot(det, s, e, k, excluded, motion)
        idx += chosen
        shot_of += [number] * len(chosen)
    return idx, shot_of


@register_sampler("keyframe")
def keyframe(
    info: SourceInfo,
    clip: ClipSpec,
    *,
    n: int,
    source: Source | None = None,
    overflow: OverflowPolicy = "repeat_last",
    **params: Any,
) -> Selection:
    """n frames spread over the clip's shots (see the module docstring).

    ``params`` are shot detector settings (``cut_threshold``, ``min_shot_s`` ...; see
    :class:`~framepipe.samplers._shots.DetectorParams`).
    """
    check_n(n)
    if source is None:
        raise SamplingError(f"{info.id}: the keyframe sampler needs the source to detect shots")
    det_params, rest = _split_detector_params(params)
    rest.pop("mode", None)  # uniform-only options the CLI may pass along
    if rest:
        raise ConfigError(f"keyframe sampler: unknown parameter(s) {', '.join(sorted(rest))}")
    det = detect_shots(source, info, clip.start_frame, clip.end_frame, **det_params)
    idx, shot_of = select_from_shots(det, n)
    idx = apply_overflow(idx, n, overflow, clip, info.id)
    shot_of += [shot_of[-1]] * (len(idx) - len(shot_of))
    ts = info.timestamps_s
    shots_json = [
        {
            "start_frame": s,
            "end_frame": e,
            "start_s": None if ts is None else round(ts[s], 6),
        }
        for s, e in det.shots
    ]
    extra = {
        "shots": shots_json,
        "transitions": [t.to_json() for t in det.transitions],
        "frame_shots": shot_of,
        "signal_frames": det.stats.get("signal_frames"),
    }
    sel_params = {"n": n, "overflow": overflow, **det_params}
    return Selection(tuple(idx), "keyframe", sel_params, extra)


# -- the iframe sampler -------------------------------------------------------------------


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


@register_sampler("iframe")
def iframe(
    info: SourceInfo,
    clip: ClipSpec,
    *,
    n: int,
    source: Source | None = None,
    overflow: OverflowPolicy = "repeat_last",
    **unused: Any,
) -> Selection:
    """The codec keyframes nearest to n evenly spaced targets (distinct). When the clip
    holds fewer keyframes than n, all of them, completed with the targets themselves."""
    check_n(n)
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


@register_clip_planner("shots")
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
    from framepipe.clips import whole_clip

    try:
        min_s = float(min_shot_s)
        max_s = None if max_shot_s in (None, 0, "none", "None") else float(max_shot_s)
    except (TypeError, ValueError):
        raise ConfigError(
            f"min_shot_s ({min_shot_s!r}) and max_shot_s ({max_shot_s!r}) must be numbers"
        ) from None
    if min_s < 0 or (max_s is not None and max_s <= 0):
        raise ConfigError(f"min_shot_s ({min_s}) must be >= 0 and max_shot_s ({max_s}) > 0")
    if max_s is not None and min_s > max_s:
        raise ConfigError(f"min_shot_s ({min_s}) must not exceed max_shot_s ({max_s})")
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


__all__ = [
    "allocate",
    "compute_features",
    "detect_shots",
    "iframe",
    "keyframe",
    "nearest_distinct",
    "pair_distance",
    "plan_shot_clips",
    "select_from_shots",
    "shot_ranges",
]
