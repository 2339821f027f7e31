"""The built-in shot detector (``detector=builtin``), on a cheap low-resolution signal.

The detector works in three passes over tiny frames (64x36 by default):

1. **Features** per decoded frame, vectorised with numpy (:mod:`framepipe.shots.features`):
   chroma and luma histograms (colour content), an 8x6 grid of block means (coarse layout)
   and the tiny luma image (fine change), each also of the *exposure-normalised* frame, so
   that a brightness ramp, camera auto-exposure or a sunset (a global gain or offset of the
   picture, content unchanged) can be told from a change of content; the picture's
   *structure* (how its normalised gradient energy spreads over orientations and over the
   picture, and how flat it is), which no exposure change moves; the mean and spread of
   luma (fades) and the variance of the Laplacian (sharpness, used later to choose frames).
2. **Hard cuts**. Between consecutive decoded frames a step score mixes the histogram,
   block, pixel and structure differences (each in 0..1). A step is a candidate cut when it
   exceeds both ``cut_threshold`` (an absolute floor) and ``cut_ratio`` times the median
   step around it (``local_window_s`` each side, the step itself and its neighbours left
   out): the threshold follows the local level of motion, so a fast pan is not cut to
   pieces. The structure step alone is a candidate too (above ``structure_threshold`` and
   ``cut_ratio`` times its own local median): a cut between pictures of alike tones (their
   colour histograms matched) changes little else. The signal skips B-frames, so every
   candidate is then *refined*: all frames between the two decoded frames are decoded and
   the cut is put on the largest single-frame step, which must carry at least
   ``cut_concentration`` of the change (a change spread over several frames is motion or a
   gradual transition, not a cut); a structure candidate must also carry that share of the
   change over 0.2 s either side (a dissolve into fine detail switches the structure early
   while its pictures keep blending). A **flash** (the picture after the jump matches a
   frame shortly before it, or the picture before matches one shortly after, within
   ``flash_s``) is not a cut. Nor is a change of exposure: the jump must keep
   ``content_share`` of its size between the exposure-normalised frames, or be a change of
   content of at least ``cut_threshold`` there (a flat field cut to a fractal is a big
   change of exposure *and* of content). So a sudden exposure jump of the same picture (a
   camera's gain stepping, a light switched on) is no cut: normalised, the pictures either
   side are the same (only where it saturates much of the frame, wiping out content, can it
   become one). Between two pictures without structure (flat fields, a field under fine
   noise) there is nothing to normalise: their level and colour are their content.
3. **Gradual transitions** (:mod:`framepipe.shots.transitions`): dissolves are novelty
   peaks that are neither a change of exposure, nor a passage through black, nor steady
   camera motion (a global shift explains most of motion's frame-to-frame change on both
   sides of the peak, none of a dissolve's); fades are runs of black frames with the ramps
   around them, including a fade in from black at the start and a fade out to black at the
   end; a fade through black is a fade even where the same picture comes back.

Finally boundaries closer than ``min_shot_s`` to each other or to the ends of the range are
dropped, weakest first. Everything is deterministic.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framepipe.shots.features import (
    FLAT,
    Features,
    compute_features,
    local_median,
    merge_features,
    pair_distance,
    steps,
    structure_steps,
)
from framepipe.shots.params import DetectorParams, Transition, TransitionKind
from framepipe.shots.transitions import dissolves, fades, novelty, resolve
from framepipe.types import SmallFrames

log = logging.getLogger(__name__)


@dataclass
class ShotDetection:
    """The shots of a range ``[start, end)`` of a video and the signal they came from."""

    start: int
    end: int
    transitions: list[Transition]
    features: Features
    params: DetectorParams
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def shots(self) -> list[tuple[int, int]]:
        """``(start_frame, end_frame)`` (exclusive) of every shot, in order."""
        cuts = [t.frame for t in self.transitions if self.start < t.frame < self.end]
        edges = [self.start, *cuts, self.end]
        return [(a, b) for a, b in itertools.pairwise(edges) if b > a]

    def restrict(self, start: int, end: int) -> ShotDetection:
        """The same detection seen through a sub-range (for a clip inside the video)."""
        keep = [
            t
            for t in self.transitions
            if start < t.frame < end
            or (t.frame == start == self.start)
            or (t.frame == end == self.end)
        ]
        rows = (self.features.indices >= start) & (self.features.indices < end)
        sub = self.features.rows(rows)
        return ShotDetection(start, end, keep, sub, self.params, dict(self.stats))


NEARLY_FLAT = 0.8
"""Flatness share (see ``Features.edges``) above which a picture has no structure to
normalise: between two such pictures (flat fields, a field under fine noise) a jump of
level or colour is the only content there is, so it is a cut."""

Refiner = Callable[[Sequence[tuple[int, int]]], SmallFrames]
"""Decodes every frame of the given ``[a, b)`` ranges at the signal's size."""


def detect(
    signal: SmallFrames,
    *,
    start: int,
    end: int,
    fps: float,
    params: DetectorParams,
    refine: Refiner | None = None,
) -> ShotDetection:
    """Shot boundaries of ``[start, end)`` from ``signal`` (frames of that range, possibly
    with gaps), decoding around candidate cuts through ``refine`` when gaps hide them."""
    fps = fps if fps > 0 and math.isfinite(fps) else 25.0
    base = compute_features(signal, params.min_contrast)
    m = len(base)
    stats: dict[str, Any] = {"signal_frames": m, "refined_frames": 0}
    if m < 2:
        return ShotDetection(start, end, [], base, params, stats)
    span = max(1, int(base.indices[-1] - base.indices[0]))
    per_s = max(1e-6, (m - 1) / span * fps)  # decoded frames per second of video

    s, e = steps(base), structure_steps(base)
    half = max(3, math.ceil(params.local_window_s * per_s))
    level, level_e = local_median(s, half, 1), local_median(e, half, 1)
    by_step = (s >= params.cut_threshold) & (s >= params.cut_ratio * level)
    by_structure = (e >= params.structure_threshold) & (e >= params.cut_ratio * level_e)
    cand = np.flatnonzero((by_step | by_structure) & (np.arange(m) > 0))
    feats = base
    if refine is not None and len(cand):
        gaps = [
            (int(base.indices[k - 1]), int(base.indices[k]) + 1)
            for k in cand
            if base.indices[k] - base.indices[k - 1] > 1
        ]
        if gaps:
            extra = refine(gaps)
            stats["refined_frames"] = len(extra)
            if len(extra):
                feats = merge_features(base, compute_features(extra, params.min_contrast))
    cuts = _confirm_cuts(feats, base, cand, by_step[cand], s, params, fps)

    fade_list = fades(base, start, end, params, fps)
    gradual: list[Transition] = []
    if params.gradual:
        gradual = dissolves(base, per_s, params, fps, cuts, fade_list)
    transitions = resolve(cuts, fade_list, gradual, start, end, params, fps)
    stats.update(candidates=len(cand), cuts=len(cuts), fades=len(fade_list), dissolves=len(gradual))
    return ShotDetection(start, end, transitions, feats, params, stats)


def _confirm_cuts(
    feats: Features,
    base: Features,
    cand: np.ndarray,
    by_step: np.ndarray,
    base_steps: np.ndarray,
    params: DetectorParams,
    fps: float,
) -> list[Transition]:
    """The candidates that are cuts. A candidate found on the step score is refined and
    checked on it; one found on the structure alone (a cut between alike tones) on the
    structure steps, which no exposure change moves, so no content check applies."""
    idx = feats.indices
    s, e = steps(feats), structure_steps(feats)
    flash_frames = max(1, round(params.flash_s * fps))
    out: list[Transition] = []
    for k, on_step in zip(cand, by_step):
        a, b = int(base.indices[k - 1]), int(base.indices[k])
        pa, pb = int(np.searchsorted(idx, a)), int(np.searchsorted(idx, b))
        series, floor = (s, params.cut_threshold) if on_step else (e, params.structure_threshold)
        gap_steps = series[pa + 1 : pb + 1]
        if len(gap_steps) == 0:
            continue
        j = pa + 1 + int(np.argmax(gap_steps))
        total = float(gap_steps.sum())
        if len(gap_steps) > 1 and series[j] < params.cut_concentration * total:
            continue  # the change is spread over the gap: motion or a gradual transition
        if series[j] < floor:
            continue
        if not on_step and not _settled(feats, j, max(2, round(0.2 * fps)), params):
            continue  # the structure switched, but the picture goes on changing: a blend
        jump = float(s[j])
        content = pair_distance(feats, np.array([j - 1]), np.array([j]), normalised=True)[0]
        flat = bool(min(feats.edges[j - 1, FLAT], feats.edges[j, FLAT]) > NEARLY_FLAT)
        need = min(params.content_share * jump, params.cut_threshold)
        if on_step and not flat and content < need:
            continue  # the same picture, exposed differently (a brightness change)
        if _is_flash(feats, j, jump, flash_frames, params.flash_return):
            continue
        frame = int(idx[j])
        out.append(Transition(frame, "cut", frame, frame + 1, float(base_steps[k])))
    return out


def _settled(f: Features, j: int, d: int, params: DetectorParams) -> bool:
    """Whether the picture changes at row ``j`` at once: the step into it carries
    ``cut_concentration`` of the change from ``d`` frames before to ``d`` frames after (a
    dissolve into fine detail switches the structure early, while its pictures keep
    blending)."""
    idx = f.indices
    lo = max(0, int(np.searchsorted(idx, idx[j - 1] - d)))
    hi = min(len(f) - 1, int(np.searchsorted(idx, idx[j] + d, side="right")) - 1)
    pair = pair_distance(f, np.array([j - 1, lo]), np.array([j, hi]))
    return bool(pair[0] >= params.cut_concentration * pair[1])


def _is_flash(f: Features, j: int, jump: float, flash_frames: int, ret: float) -> bool:
    """Whether the jump into row ``j`` is a flash: the picture after it matches one shortly
    before, or the picture before matches one shortly after."""
    idx = f.indices
    frame = int(idx[j])
    after = np.flatnonzero((idx > frame) & (idx <= frame + flash_frames))
    if len(after):
        d = pair_distance(f, np.full(len(after), j - 1), after)
        if float(d.min()) < ret * jump:
            return True
    before = np.flatnonzero((idx < frame - 1) & (idx >= frame - 1 - flash_frames))
    if len(before):
        d = pair_distance(f, np.full(len(before), j), before)
        if float(d.min()) < ret * jump:
            return True
    return False


__all__ = [
    "DetectorParams",
    "Features",
    "Refiner",
    "ShotDetection",
    "Transition",
    "TransitionKind",
    "compute_features",
    "detect",
    "merge_features",
    "novelty",
    "pair_distance",
    "steps",
]
