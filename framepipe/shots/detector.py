"""Shot boundary detection on a cheap low-resolution signal.

The detector works in three passes over tiny frames (64x36 by default):

1. **Features** per decoded frame, vectorised with numpy: chroma and luma histograms
   (colour content), an 8x6 grid of block means (coarse
   layout), the full tiny luma image (fine change), mean and spread of luma (fades), and the
   variance of the Laplacian (sharpness, used later to choose frames).
2. **Hard cuts**. Between consecutive decoded frames a step score mixes the histogram,
   block and pixel differences (each in 0..1). A step is a candidate cut when it exceeds
   both ``cut_threshold`` and ``cut_ratio`` times the median step around it (``local_window_s``
   each side, the step itself and its neighbours left out): the threshold follows the local
   level of motion, so a fast pan is not cut to pieces. The signal skips B-frames, so every
   candidate is then *refined*: all frames between the two decoded frames are decoded and
   the cut is put on the largest single-frame step, which must carry at least
   ``cut_concentration`` of the change (a change spread over several frames is motion or a
   gradual transition, not a cut). A **flash** (the picture after the jump matches a frame
   shortly before it, or the picture before matches one shortly after, within ``flash_s``)
   is not a cut.
3. **Gradual transitions**. A novelty curve (Foote's checkerboard kernel over the
   self-similarity of colour and layout, half-width ``gradual_window_s``) compares what comes
   before each point with what comes after, minus what changes within each side: steady
   motion cancels, a dissolve peaks once in its middle. Peaks above ``gradual_threshold`` and
   ``gradual_ratio`` times the local level, away from cuts, are dissolves. Runs of **dark
   frames** (mean luma below ``dark_level``) between two shots are one fade (the boundary is
   the first frame after the dark run); every other boundary inside a fade's ramps is dropped.

Finally boundaries closer than ``min_shot_s`` to each other or to the ends of the range are
dropped, weakest first. Everything is deterministic.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np

from framepipe.errors import ConfigError
from framepipe.types import SkipMode, SmallFrames

log = logging.getLogger(__name__)

TransitionKind = Literal["cut", "dissolve", "fade"]


@dataclass(frozen=True)
class DetectorParams:
    """Settings of the shot detector; the defaults suit ordinary edited video."""

    size: tuple[int, int] = (64, 36)
    """Width and height of the decoded signal frames."""
    skip: SkipMode = "bidir"
    """Frames the signal decoder may drop: ``bidir`` (B-frames; fastest), ``nonref`` or
    ``none`` (decode every frame; no refinement needed)."""
    cut_threshold: float = 0.12
    """Smallest step score (0..1) that can be a cut."""
    cut_ratio: float = 2.5
    """A cut's step score must be this many times the local median step."""
    cut_concentration: float = 0.5
    """Share of a candidate's change that its largest single-frame step must carry."""
    local_window_s: float = 1.0
    """Seconds each side of a step over which the local motion level is measured."""
    flash_s: float = 0.4
    """Longest flash (a few bright frames, then the same shot again) that is ignored."""
    flash_return: float = 0.5
    """A flash returns to a picture closer than this share of the jump's distance."""
    gradual: bool = True
    """Detect dissolves (fades to and from black are always detected)."""
    gradual_window_s: float = 0.8
    """Half-width in seconds of the novelty kernel that finds dissolves."""
    gradual_threshold: float = 0.08
    """Smallest rise of novelty (0..1) above its local level for a dissolve."""
    gradual_ratio: float = 2.0
    """A dissolve's novelty must be this many times its local level (the 30th percentile
    of the novelty within four kernel widths)."""
    dark_level: float = 0.07
    """Mean luma (0..1) below which a frame counts as black (fades)."""
    min_shot_s: float = 0.5
    """Shortest shot: boundaries closer than this are dropped, weakest first."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DetectorParams:
        """Build from keyword parameters, rejecting unknown names and bad values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"unknown shot detector parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        kw = dict(params)
        if "size" in kw:
            s = kw["size"]
            if isinstance(s, str):
                s = s.lower().replace(",", "x").split("x")
            try:
                w, h = (int(v) for v in s)
            except (TypeError, ValueError):
                raise ConfigError(f"size ({kw['size']!r}) must be WIDTHxHEIGHT") from None
            if not (16 <= w <= 640 and 16 <= h <= 360):
                raise ConfigError(f"size ({w}x{h}) must be between 16x16 and 640x360")
            kw["size"] = (w - w % 2, h - h % 2)
        if "skip" in kw and kw["skip"] not in ("none", "nonref", "bidir"):
            raise ConfigError(f"skip ({kw['skip']!r}) must be none, nonref or bidir")
        for name, value in kw.items():
            if name in ("size", "skip"):
                continue
            if name == "gradual":
                kw[name] = bool(value)
                continue
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name} ({value!r}) must be a number") from None
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} ({value!r}) must be a finite number >= 0")
            kw[name] = v
        return cls(**kw)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


@dataclass(frozen=True)
class Transition:
    """A boundary between two shots."""

    frame: int
    """First frame of the new shot."""
    kind: TransitionKind
    """``cut``, ``dissolve`` or ``fade``."""
    start_frame: int
    """First frame of the transition (== ``frame`` for a cut)."""
    end_frame: int
    """One past its last frame (``frame + 1`` for a cut)."""
    score: float
    """Strength (step score for cuts, novelty for dissolves, 1 for fades)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "kind": self.kind,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class Features:
    """Per-frame features of a set of small frames (rows follow ``indices``)."""

    indices: np.ndarray
    hist: np.ndarray
    """m x 32: chroma histogram (4 x 4 bins of U, V) and luma histogram (16), each summing
    to 1."""
    grid: np.ndarray
    """m x G: block means of Y, U, V in 0..1."""
    luma: np.ndarray
    """m x h x w luma in 0..1."""
    luma_mean: np.ndarray
    luma_std: np.ndarray
    sharpness: np.ndarray
    """Variance of the 4-neighbour Laplacian of the luma."""

    def __len__(self) -> int:
        return len(self.indices)


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
        keep = [t for t in self.transitions if start < t.frame < end]
        rows = (self.features.indices >= start) & (self.features.indices < end)
        f = self.features
        sub = Features(
            f.indices[rows],
            f.hist[rows],
            f.grid[rows],
            f.luma[rows],
            f.luma_mean[rows],
            f.luma_std[rows],
            f.sharpness[rows],
        )
        return ShotDetection(start, end, keep, sub, self.params, dict(self.stats))


# -- features -----------------------------------------------------------------------------


def compute_features(sf: SmallFrames) -> Features:
    """Features of every frame of ``sf`` (YUV frames; see :class:`Features`)."""
    yuv = sf.frames
    m, h, w, _ = yuv.shape
    luma = np.clip((yuv[..., 0].astype(np.float32) - 16.0) * (1.0 / 219.0), 0.0, 1.0)
    npx = h * w
    rows = np.repeat(np.arange(m), npx)
    ybin = np.minimum((luma.reshape(m, -1) * 16).astype(np.int64), 15).ravel()
    luma_hist = np.bincount(rows * 16 + ybin, minlength=16 * m)
    # chroma: 4 x 4 bins of (U, V) around grey (128), where most pixels are
    u = np.clip((yuv[..., 1].astype(np.int64) - 64) // 32, 0, 3).reshape(m, -1)
    v = np.clip((yuv[..., 2].astype(np.int64) - 64) // 32, 0, 3).reshape(m, -1)
    chroma_hist = np.bincount(rows * 16 + (u * 4 + v).ravel(), minlength=16 * m)
    hist = np.concatenate([chroma_hist.reshape(m, 16), luma_hist.reshape(m, 16)], axis=1)
    hist = hist.astype(np.float32) / npx
    gh, gw = 6, 8
    bh, bw = max(1, h // gh), max(1, w // gw)
    crop = yuv[:, : bh * gh, : bw * gw].astype(np.float32) * (1.0 / 255.0)
    grid = crop.reshape(m, gh, bh, gw, bw, 3).mean(axis=(2, 4)).reshape(m, -1)
    if h > 2 and w > 2:
        lap = (
            -4.0 * luma[:, 1:-1, 1:-1]
            + luma[:, :-2, 1:-1]
            + luma[:, 2:, 1:-1]
            + luma[:, 1:-1, :-2]
            + luma[:, 1:-1, 2:]
        )
        sharp = lap.reshape(m, -1).var(axis=1)
    else:
        sharp = np.zeros(m)
    flat = luma.reshape(m, -1)
    return Features(
        indices=np.asarray(sf.indices, dtype=np.int64),
        hist=hist,
        grid=grid.astype(np.float32),
        luma=luma,
        luma_mean=flat.mean(axis=1, dtype=np.float64),
        luma_std=flat.std(axis=1, dtype=np.float64),
        sharpness=np.asarray(sharp, dtype=np.float64),
    )


def merge_features(a: Features, b: Features) -> Features:
    """Rows of ``a`` and ``b`` together, sorted by frame index (``a`` wins on repeats)."""
    idx = np.concatenate([a.indices, b.indices])
    uniq, first = np.unique(idx, return_index=True)

    def cat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.concatenate([x, y])[first]

    return Features(
        uniq,
        cat(a.hist, b.hist),
        cat(a.grid, b.grid),
        cat(a.luma, b.luma),
        cat(a.luma_mean, b.luma_mean),
        cat(a.luma_std, b.luma_std),
        cat(a.sharpness, b.sharpness),
    )


def pair_distance(f: Features, a: np.ndarray, b: np.ndarray, *, fine: bool = True) -> np.ndarray:
    """Distance (0..1) between rows ``a`` and ``b``: colour histograms, block layout and,
    with ``fine``, tiny pixels, averaged."""
    hd = 0.25 * np.abs(f.hist[a] - f.hist[b]).sum(axis=1)
    gd = np.minimum(1.0, 4.0 * np.abs(f.grid[a] - f.grid[b]).mean(axis=1))
    if not fine:
        return np.asarray(0.5 * (hd + gd), dtype=np.float64)
    m = len(a)
    pd = np.minimum(1.0, 4.0 * np.abs(f.luma[a] - f.luma[b]).reshape(m, -1).mean(axis=1))
    return np.asarray((hd + gd + pd) / 3.0, dtype=np.float64)


def steps(f: Features) -> np.ndarray:
    """``s[k]`` = distance from row ``k - 1`` to row ``k`` (``s[0] = 0``)."""
    m = len(f)
    out = np.zeros(m)
    if m > 1:
        k = np.arange(1, m)
        out[1:] = pair_distance(f, k - 1, k)
    return out


def _local_median(x: np.ndarray, half: int, exclude: int, q: float = 50.0) -> np.ndarray:
    """Median (or the ``q``-th percentile) of ``x`` over ``[k - half, k + half]`` without
    ``[k - exclude, k + exclude]``."""
    m = len(x)
    if m == 0:
        return x.copy()
    pad = np.concatenate([np.full(half, np.nan), x, np.full(half, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1).copy()
    win[:, half - exclude : half + exclude + 1] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows (tiny inputs)
        med = np.nanpercentile(win, q, axis=1) if q != 50.0 else np.nanmedian(win, axis=1)
    return np.nan_to_num(med, nan=0.0)


# -- detection ----------------------------------------------------------------------------

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
    base = compute_features(signal)
    m = len(base)
    stats: dict[str, Any] = {"signal_frames": m, "refined_frames": 0}
    if m < 2:
        return ShotDetection(start, end, [], base, params, stats)
    span = max(1, int(base.indices[-1] - base.indices[0]))
    per_s = max(1e-6, (m - 1) / span * fps)  # decoded frames per second of video

    s = steps(base)
    half = max(3, math.ceil(params.local_window_s * per_s))
    level = _local_median(s, half, 1)
    cand = np.flatnonzero(
        (s >= params.cut_threshold) & (s >= params.cut_ratio * level) & (np.arange(m) > 0)
    )
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
                feats = merge_features(base, compute_features(extra))
    cuts = _confirm_cuts(feats, base, cand, s, params, fps)

    fades = _fades(base, start, end, params, fps)
    gradual: list[Transition] = []
    if params.gradual:
        gradual = _dissolves(base, per_s, params, fps)
    transitions = _resolve(cuts, fades, gradual, start, end, params, fps)
    stats.update(candidates=len(cand), cuts=len(cuts), fades=len(fades), dissolves=len(gradual))
    return ShotDetection(start, end, transitions, feats, params, stats)


def _confirm_cuts(
    feats: Features,
    base: Features,
    cand: np.ndarray,
    base_steps: np.ndarray,
    params: DetectorParams,
    fps: float,
) -> list[Transition]:
    idx = feats.indices
    s = steps(feats)
    flash_frames = max(1, round(params.flash_s * fps))
    out: list[Transition] = []
    for k in cand:
        a, b = int(base.indices[k - 1]), int(base.indices[k])
        pa, pb = int(np.searchsorted(idx, a)), int(np.searchsorted(idx, b))
        gap_steps = s[pa + 1 : pb + 1]
        if len(gap_steps) == 0:
            continue
        j = pa + 1 + int(np.argmax(gap_steps))
        total = float(gap_steps.sum())
        if len(gap_steps) > 1 and s[j] < params.cut_concentration * total:
            continue  # the change is spread over the gap: motion or a gradual transition
        jump = float(s[j])
        if jump < params.cut_threshold:
            continue
        if _is_flash(feats, j, jump, flash_frames, params.flash_return):
            continue
        frame = int(idx[j])
        out.append(Transition(frame, "cut", frame, frame + 1, float(base_steps[k])))
    return out


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


def novelty(f: Features, half: int) -> np.ndarray:
    """Checkerboard-kernel novelty: ``nov[k]`` compares rows ``[k - half, k)`` with
    ``[k, k + half)`` (mean cross distance minus mean distance within each side)."""
    m = len(f)
    pad = np.concatenate([np.zeros(half, np.int64), np.arange(m), np.full(half, m - 1)])
    dist_cache: dict[int, np.ndarray] = {}

    def band(o: int) -> np.ndarray:  # band(o)[p] = distance(pad[p], pad[p + o])
        if o not in dist_cache:
            n = len(pad) - o
            dist_cache[o] = pair_distance(f, pad[:n], pad[o : o + n], fine=False)
        return dist_cache[o]

    ks = np.arange(m) + half  # position of row k in pad
    cross = np.zeros(m)
    for i in range(1, half + 1):
        for j in range(half):
            cross += band(i + j)[ks - i]
    cross /= half * half
    within = np.zeros(m)
    pairs = 0
    for i in range(half):
        for i2 in range(i + 1, half):
            within += band(i2 - i)[ks - half + i] + band(i2 - i)[ks + i]
            pairs += 2
    if pairs:
        within /= pairs
    return np.asarray(np.maximum(0.0, cross - within))


def _dissolves(f: Features, per_s: float, params: DetectorParams, fps: float) -> list[Transition]:
    m = len(f)
    half = max(2, round(params.gradual_window_s * per_s))
    reach = max(1, round(params.gradual_window_s * fps))
    if m < 2 * half + 1:
        return []
    nov = novelty(f, half)
    level = _local_median(nov, 4 * half, half, q=30.0)
    out: list[Transition] = []
    for k in range(1, m - 1):
        v = nov[k]
        if v - level[k] < params.gradual_threshold or v < params.gradual_ratio * level[k]:
            continue
        near = np.abs(f.indices - f.indices[k]) <= reach
        if v < nov[near].max() or np.any(nov[:k][near[:k]] == v):
            continue  # not the (first) maximum within the kernel's reach in frames
        a = k
        while a > 0 and nov[a - 1] >= 0.5 * v:
            a -= 1
        b = k
        while b < m - 1 and nov[b + 1] >= 0.5 * v:
            b += 1
        out.append(
            Transition(
                int(f.indices[k]),
                "dissolve",
                int(f.indices[a]),
                int(f.indices[b]) + 1,
                float(v),
            )
        )
    return out


def _fades(
    f: Features, start: int, end: int, params: DetectorParams, fps: float
) -> list[Transition]:
    dark = f.luma_mean < params.dark_level
    m = len(f)
    out: list[Transition] = []
    k = 0
    max_ramp = max(2, round(2.0 * fps))
    while k < m:
        if not dark[k]:
            k += 1
            continue
        r0 = k
        while k < m and dark[k]:
            k += 1
        r1 = k  # dark rows are [r0, r1)
        if r0 == 0 or r1 == m:
            continue  # fade in from black at the start, or out at the end: not a boundary
        a = r0
        while (
            a > 0
            and f.luma_mean[a - 1] > 1.08 * f.luma_mean[a] + 2e-3
            and f.indices[r0] - f.indices[a - 1] <= max_ramp
        ):
            a -= 1
        b = r1
        while (
            b < m - 1
            and f.luma_mean[b + 1] > 1.08 * f.luma_mean[b] + 2e-3
            and f.indices[b + 1] - f.indices[r1] <= max_ramp
        ):
            b += 1
        frame = int(f.indices[r1 - 1]) + 1
        out.append(Transition(frame, "fade", int(f.indices[a]), int(f.indices[b]) + 1, 1.0))
    return out


def _resolve(
    cuts: list[Transition],
    fades: list[Transition],
    gradual: list[Transition],
    start: int,
    end: int,
    params: DetectorParams,
    fps: float,
) -> list[Transition]:
    """One boundary per transition, shots at least ``min_shot_s`` long."""
    min_len = max(1, round(params.min_shot_s * fps))
    kept: list[Transition] = list(fades)

    def inside_fade(t: Transition) -> bool:
        return any(fd.start_frame <= t.frame < fd.end_frame for fd in fades)

    kept += [c for c in cuts if not inside_fade(c)]
    # a cut or a fade raises the novelty a kernel width around it: that bump is not a dissolve
    reach = max(min_len, round(params.gradual_window_s * fps))
    for g in gradual:
        if any(c.frame - reach < g.frame < c.frame + reach for c in cuts):
            continue
        if any(fd.start_frame - reach < g.frame < fd.end_frame + reach for fd in fades):
            continue
        kept.append(g)
    # strongest first: fades, then cuts, then dissolves, each by score
    rank = {"fade": 0, "cut": 1, "dissolve": 2}
    kept.sort(key=lambda t: (rank[t.kind], -t.score, t.frame))
    final: list[Transition] = []
    for t in kept:
        if t.frame - start < min_len or end - t.frame < min_len:
            continue
        if any(abs(t.frame - u.frame) < min_len for u in final):
            continue
        final.append(t)
    final.sort(key=lambda t: t.frame)
    return final
