"""Gradual transitions (dissolves, fades) and the final choice of one boundary per
transition.

**Dissolves.** A novelty curve (Foote's checkerboard kernel over the self-similarity of
the pictures, half-width ``gradual_window_s``) compares what comes before each point with
what comes after, minus what changes within each side. Two pictures are as different as
their most different aspect: their colour and layout, or their structure (how their
gradient energy spreads over orientations and over the picture). Averaging the two would
let the one that did not change dilute the one that did: two textures of the same kind
in other colours and places, or two pictures of alike tones built differently, are other
pictures all the same. A dissolve peaks once in its middle (the largest novelty within
the kernel's reach, away from the bumps that cuts and fades raise around them). Three
things that are not dissolves peak too, and each peak is checked for them:

- a change of exposure (a brightness ramp, auto-exposure, a sunset): the novelty of the
  exposure-normalised pictures must keep ``content_share`` of the peak somewhere within
  the kernel's width (normalisation is not linear in a blend: between a busy picture and a
  flat one, the busy one sets the contrast of every blend until late in the dissolve, so
  the normalised pictures change late, not in the middle);
- a passage through black (a fade, found as one, or a light switched off and on): black
  frames within the kernel;
- steady camera motion, however fast, which changes what the camera sees within a second
  as much as a dissolve does: where a global shift of the picture (found by phase
  correlation between consecutive frames) explains more than ``gradual_motion`` of the
  frame-to-frame change on both sides of the peak (each half of the kernel), the peak is
  motion (a dissolve out of a pan or into one has a side that no shift explains). A dissolve is no
  shift: its frames are blends of two pictures.

**Fades.** Runs of dark frames (raw mean luma below ``dark_level``) with the luma ramps
around them. Between two shots a run is one fade (the boundary is the first frame after the
dark run). A fade through black is an edit even where the same picture comes back (a flat
field fading out and in again), so only a dip into black that is no fade is dropped: one
without a ramp of at least ``FADE_RAMP`` frames on either side (a lamp switched off and on)
and with the same picture after it as before. A fade in from black at the start of the range and
a fade out to black at its end are reported as fades too, at the range's ends (they border
one shot only, so they are not boundaries).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from framepipe.shots.features import (
    Features,
    local_median,
    pair_distance,
    structure_distance,
    true_runs,
)
from framepipe.shots.params import DetectorParams, Transition


def novelty(f: Features, half: int, *, normalised: bool = False) -> np.ndarray:
    """Checkerboard-kernel novelty: ``nov[k]`` compares rows ``[k - half, k)`` with
    ``[k, k + half)`` (mean cross distance minus mean distance within each side). The
    distance of two rows is the larger of their colour-and-layout distance (histograms and
    block means) and their structure distance."""
    m = len(f)
    pad = np.concatenate([np.zeros(half, np.int64), np.arange(m), np.full(half, m - 1)])
    dist_cache: dict[int, np.ndarray] = {}
    hist = f.hist_n if normalised else f.hist
    grid = f.grid_of(slice(None), normalised)

    def band(o: int) -> np.ndarray:  # band(o)[p] = distance(pad[p], pad[p + o])
        if o not in dist_cache:
            n = len(pad) - o
            a, b = pad[:n], pad[o : o + n]
            hd = 0.25 * np.abs(hist[a] - hist[b]).sum(axis=1)
            gd = np.minimum(1.0, 4.0 * np.abs(grid[a] - grid[b]).mean(axis=1))
            ed = structure_distance(f.edges[a], f.edges[b])
            dist_cache[o] = np.maximum(0.5 * (hd + gd), ed)
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


def motion_share(f: Features, lo: int, hi: int) -> float:
    """Share (0..1) of the frame-to-frame change of rows ``lo..hi`` that a global shift of
    the picture (camera motion) explains: near 1 for a pan, near 0 for a dissolve."""
    total = explained = 0.0
    pics = [_blur(f.luma[r]) for r in range(lo, hi + 1)]
    for a, b in itertools.pairwise(pics):
        change = float(np.abs(b - a).mean())
        total += change
        explained += max(0.0, change - _shifted_error(a, b))
    return explained / total if total > 0 else 0.0


def _blur(x: np.ndarray) -> np.ndarray:
    """Twice the 3 x 3 binomial filter (a shift by a fraction of a tiny pixel then leaves
    little error behind)."""
    y = x.astype(np.float64)
    for _ in range(2):
        y = np.pad(y, 1, mode="edge")
        y = 0.25 * (y[:-2] + 2.0 * y[1:-1] + y[2:])
        y = 0.25 * (y[:, :-2] + 2.0 * y[:, 1:-1] + y[:, 2:])
    return y


def _shifted_error(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest mean difference between ``b`` and ``a`` shifted (over their overlap, at
    least a third of the picture each way), near the peaks of their phase correlation."""
    h, w = a.shape
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    cross = fb * np.conj(fa)
    corr = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=a.shape)
    best = math.inf
    for peak in np.argsort(corr.ravel())[::-1][:3]:
        py, px = divmod(int(peak), w)
        py, px = (py - h if py > h // 2 else py), (px - w if px > w // 2 else px)
        for dy in (py - 1, py, py + 1):
            for dx in (px - 1, px, px + 1):
                y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
                if 3 * (y1 - y0) < h or 3 * (x1 - x0) < w:
                    continue
                diff = b[y0 + dy : y1 + dy, x0 + dx : x1 + dx] - a[y0:y1, x0:x1]
                best = min(best, float(np.abs(diff).mean()))
    return best


def dissolves(
    f: Features,
    per_s: float,
    params: DetectorParams,
    fps: float,
    cuts: Sequence[Transition] = (),
    fade_list: Sequence[Transition] = (),
) -> list[Transition]:
    """Peaks of novelty that are dissolves (see the module docstring), away from the bumps
    that ``cuts`` and ``fade_list`` raise around them."""
    m = len(f)
    half = max(2, round(params.gradual_window_s * per_s))
    reach = max(1, round(params.gradual_window_s * fps))
    if m < 2 * half + 1:
        return []
    nov = novelty(f, half)
    content = novelty(f, half, normalised=True)
    dark = f.dark(params.dark_level)
    level = local_median(nov, 4 * half, half, q=30.0)
    free = ~near_boundary(f.indices, cuts, fade_list, params, fps)
    rise = (nov - level >= params.gradual_threshold) & (nov >= params.gradual_ratio * level)
    rise[0] = rise[-1] = False
    out: list[Transition] = []
    for k in map(int, np.flatnonzero(rise & free)):
        v = nov[k]
        lo_r = int(np.searchsorted(f.indices, f.indices[k] - reach))
        hi_r = int(np.searchsorted(f.indices, f.indices[k] + reach, side="right"))
        near = nov[lo_r:hi_r]
        if v < near.max() or np.any(nov[lo_r:k] == v):
            continue  # not the (first) maximum within the kernel's reach in frames
        lo, hi = max(0, k - half), min(m - 1, k + half)
        if content[lo : hi + 1].max() < min(params.content_share * v, params.gradual_threshold):
            continue  # a change of exposure (a brightness ramp), not of content
        if dark[lo : hi + 1].any():
            continue  # by black frames: a fade (found as one) or a dip, never a dissolve
        if motion_share(f, lo, k) > params.gradual_motion and (
            motion_share(f, k, hi) > params.gradual_motion
        ):
            continue  # the camera moves over the picture, it does not blend into another
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


FADE_RAMP = 3
"""Frames of ramp on each side that make a dip into black a fade, whatever comes after."""


def fades(
    f: Features, start: int, end: int, params: DetectorParams, fps: float
) -> list[Transition]:
    """Fades through, from and to black (see the module docstring)."""
    dark = f.dark(params.dark_level)
    m = len(f)
    out: list[Transition] = []
    max_ramp = max(2, round(2.0 * fps))
    for r0, r1 in true_runs(dark):  # dark rows are [r0, r1)
        if r0 == 0 and r1 == m:
            break  # black throughout: no transition
        a = _ramp(f, r0, -1, max_ramp) if r0 > 0 else 0
        b = _ramp(f, r1 - 1, 1, max_ramp) if r1 < m else m - 1
        span = int(f.indices[a]), int(f.indices[b]) + 1
        if r0 == 0:  # fade in from black: the first shot begins with it
            if b - (r1 - 1) >= 2:
                out.append(Transition(start, "fade", start, span[1], 1.0))
            continue
        if r1 == m:  # fade out to black: the last shot ends with it
            if r0 - a >= 2:
                out.append(Transition(end, "fade", span[0], end, 1.0))
            continue
        ramps = min(int(f.indices[r0] - f.indices[a]), int(f.indices[b] - f.indices[r1 - 1]))
        before, after = max(0, a - 1), min(m - 1, b + 1)
        same = pair_distance(f, np.array([before]), np.array([after]), normalised=True)[0]
        if ramps < FADE_RAMP and same < params.cut_threshold:
            continue  # a switch to black and back to the same picture: a dip, not a fade
        frame = int(f.indices[r1 - 1]) + 1
        out.append(Transition(frame, "fade", span[0], span[1], 1.0))
    return out


def _ramp(f: Features, r: int, step: int, max_ramp: int) -> int:
    """The last row of the luma ramp leading away from dark row ``r`` (backwards for
    ``step = -1``): within ``max_ramp`` frames, rows keep getting brighter by at least what
    a linear ramp over ``max_ramp`` frames adds (``1 / max_ramp`` of the level a frame), so
    the slow top of a long linear fade belongs to it."""
    y, idx, m = f.luma_mean, f.indices, len(f)
    a = r
    while (
        0 <= a + step < m
        and abs(int(idx[a + step]) - int(idx[r])) <= max_ramp
        and y[a + step] > y[a] * (1.0 + abs(int(idx[a + step]) - int(idx[a])) / max_ramp) + 2e-3
    ):
        a += step
    return a


def near_boundary(
    frames: np.ndarray,
    cuts: Sequence[Transition],
    fade_list: Sequence[Transition],
    params: DetectorParams,
    fps: float,
) -> np.ndarray:
    """Which of ``frames`` (sorted) lie in the novelty bump that a cut or a fade raises a
    kernel width around it (such a bump is not a dissolve)."""
    reach = max(1, round(params.min_shot_s * fps), round(params.gradual_window_s * fps))
    out = np.zeros(len(frames), bool)
    spans = [(c.frame, c.frame) for c in cuts] + [(t.start_frame, t.end_frame) for t in fade_list]
    for a, b in spans:
        lo = int(np.searchsorted(frames, a - reach, side="right"))
        out[lo : int(np.searchsorted(frames, b + reach, side="left"))] = True
    return out


def resolve(
    cuts: list[Transition],
    fade_list: list[Transition],
    gradual: list[Transition],
    start: int,
    end: int,
    params: DetectorParams,
    fps: float,
) -> list[Transition]:
    """One boundary per transition, shots at least ``min_shot_s`` long: the fades, then the
    cuts (but those inside a fade kept: the steps of its ramps), then the dissolves, each
    strongest first. ``gradual`` are dissolves away from ``cuts`` and ``fade_list`` (see
    :func:`near_boundary`)."""
    min_len = max(1, round(params.min_shot_s * fps))
    edge = [fd for fd in fade_list if fd.frame in (start, end)]
    final: list[Transition] = []

    def keep(ts: list[Transition]) -> None:  # strongest first
        for t in sorted(ts, key=lambda t: (-t.score, t.frame)):
            if t.frame - start < min_len or end - t.frame < min_len:
                continue
            if any(abs(t.frame - u.frame) < min_len for u in final):
                continue
            final.append(t)

    # fades first, then the cuts outside the fades kept, then dissolves
    keep([fd for fd in fade_list if fd.frame not in (start, end)])
    fades_kept = [*final, *edge]
    keep([c for c in cuts if not any(t.start_frame <= c.frame < t.end_frame for t in fades_kept)])
    keep(gradual)
    final += edge
    final.sort(key=lambda t: (t.frame, t.start_frame))
    return final
