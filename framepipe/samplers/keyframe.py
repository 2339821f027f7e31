"""The keyframe sampler: n frames spread over the shots of a clip.

It detects the clip's shots (:func:`framepipe.shots.detect_shots`, cached per source, so
``--clips shots --sampler keyframe`` detects once per video) and spreads n frames over them:
every shot gets a frame while n allows (the longest shots first when shots outnumber n),
further frames go to the shot whose frames each cover the most time (so long shots get frames
in proportion to their length), and within a shot (or a part of a long one) the chosen frame
is a sharp, representative one away from fades and dissolves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.errors import SamplingError
from framepipe.samplers.base import DEFAULT_OVERFLOW, apply_overflow, check_args, register_sampler
from framepipe.samplers.uniform import uniform_indices
from framepipe.shots import DetectorParams, ShotDetection, checked_params, detect_shots
from framepipe.shots.detector import steps
from framepipe.types import ClipSpec, Selection, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)


DEFAULTS: dict[str, Any] = {"overflow": DEFAULT_OVERFLOW, **dataclasses.asdict(DetectorParams())}
"""The options, with their defaults: ``overflow`` and the shot detector's settings
(:class:`~framepipe.shots.DetectorParams`)."""


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
    excluded = f.dark(det.params.dark_level)
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


def check_keyframe(n: int, params: Mapping[str, Any]) -> None:
    """The keyframe sampler's check of its settings: n, its options and the shot detector's
    values."""
    check_args("keyframe", n, params, DEFAULTS)
    checked_params({k: v for k, v in params.items() if k != "overflow"})


def keyframe(
    info: SourceInfo,
    clip: ClipSpec,
    *,
    n: int,
    source: Source | None = None,
    **params: Any,
) -> Selection:
    """n frames spread over the clip's shots (see the module docstring).

    ``params`` are ``overflow`` and the shot detector's settings (``detector``:
    ``builtin`` or ``transnetv2``, ``cut_threshold``, ``min_shot_s`` ...; see
    :class:`~framepipe.shots.DetectorParams`). The record's selection names the detector.
    """
    check_keyframe(n, params)
    overflow = params.get("overflow", DEFAULTS["overflow"])
    detector = {k: v for k, v in params.items() if k != "overflow"}
    if source is None:
        raise SamplingError(f"{info.id}: the keyframe sampler needs the source to detect shots")
    det = detect_shots(source, info, clip.start_frame, clip.end_frame, **detector)
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
        "detector": det.params.detector,
        "shots": shots_json,
        "transitions": [t.to_json() for t in det.transitions],
        "frame_shots": shot_of,
        "signal_frames": det.stats.get("signal_frames"),
    }
    sel_params = {"n": n, "overflow": overflow, **detector}
    return Selection(tuple(idx), "keyframe", sel_params, extra)


register_sampler("keyframe", defaults=DEFAULTS, check=check_keyframe)(keyframe)


__all__ = ["allocate", "keyframe", "select_from_shots"]
