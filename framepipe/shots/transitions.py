"""Gradual transitions (dissolves, fades) and the final choice of one boundary per
transition.

**Dissolves.** A novelty curve (Foote's checkerboard kernel over the self-similarity of
colour and layout, half-width ``gradual_window_s``) compares what comes before each point
with what comes after, minus what changes within each side. A dissolve peaks once in its
middle. So do three things that are not dissolves, and each peak is checked for them:

- a change of exposure (a brightness ramp, auto-exposure, a sunset): the novelty of the
  exposure-normalised pictures must keep ``content_share`` of the peak;
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
from collections.abc import Callable, Sequence

import numpy as np

from framepipe.shots.features import Features, local_median, pair_distance, structure_distance
from framepipe.shots.params import DetectorParams, Transition


def novelty(f: Features, half: int, *, normalised: bool = False) -> np.ndarray:
    """Checkerboard-kernel novelty: ``nov[k]`` compares rows ``[k - half, k)`` with
    ``[k, k + half)`` (mean cross distance minus mean distance within each side)."""
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
            dist_cache[o] = (hd + gd + ed) / 3.0
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
    skip: Callable[[int], bool] | None = None,
) -> list[Transition]:
    """Peaks of novelty that are dissolves (see the module docstring); peaks at a frame
    for which ``skip`` is true are not looked at (the bumps around cuts and fades)."""
    m = len(f)
    half = max(2, round(params.gradual_window_s * per_s))
    reach = max(1, round(params.gradual_window_s * fps))
    if m < 2 * half + 1:
        return []
    nov = novelty(f, half)
    content = novelty(f, half, normalised=True)
    dark = f.dark(params.dark_level)
    level = local_median(nov, 4 * half, half, q=30.0)
    out: list[Transition] = []
    for k in range(1, m - 1):
        v = nov[k]
        if v - level[k] < params.gradual_threshold or v < params.gradual_ratio * level[k]:
            continue
        near = np.abs(f.indices - f.indices[k]) <= reach
        if v < nov[near].max() or np.any(nov[:k][near[:k]] == v):
            continue  # not the (first) maximum within the kernel's reach in frames
        if skip is not None and skip(int(f.indices[k])):
            continue
        if content[k] < min(params.content_share * v, params.gradual_threshold):
            continue  # a change of exposure (a brightness ramp), not of content
        lo, hi = max(0, k - half), min(m - 1, k + half)
        if dark[lo : hi + 1].any():
            continue  # by black frames: a fade (found as one) or a dip, never a dissolve
        before = motion_share(f, max(0, k - half), k)
        if before > params.gradual_motion and motion_share(f, k, min(m - 1, k + half)) > (
            params.gradual_motion
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
    k = 0
    while k < m:
        if not dark[k]:
            k += 1
            continue
        r0 = k
        while k < m and dark[k]:
            k += 1
        r1 = k  # dark rows are [r0, r1)
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
    ``step = -1``): rows keep getting brighter, within ``max_ramp`` frames."""
    y, idx, m = f.luma_mean, f.indices, len(f)
    a = r
    while (
        0 <= a + step < m
        and y[a + step] > 1.08 * y[a] + 2e-3
        and abs(int(idx[a + step]) - int(idx[r])) <= max_ramp
    ):
        a += step
    return a


def near_boundary(
    frame: int,
    cuts: Sequence[Transition],
    fade_list: Sequence[Transition],
    params: DetectorParams,
    fps: float,
) -> bool:
    """Whether ``frame`` lies in the novelty bump that a cut or a fade raises a kernel width
    around it (such a bump is not a dissolve)."""
    reach = max(1, round(params.min_shot_s * fps), round(params.gradual_window_s * fps))
    return any(c.frame - reach < frame < c.frame + reach for c in cuts) or any(
        fd.start_frame - reach < frame < fd.end_frame + reach for fd in fade_list
    )


def resolve(
    cuts: list[Transition],
    fade_list: list[Transition],
    gradual: list[Transition],
    start: int,
    end: int,
    params: DetectorParams,
    fps: float,
) -> list[Transition]:
    """One boundary per transition, shots at least ``min_shot_s`` long."""
    min_len = max(1, round(params.min_shot_s * fps))
    edge = [fd for fd in fade_list if fd.frame in (start, end)]
    kept: list[Transition] = [fd for fd in fade_list if fd.frame not in (start, end)]

    def inside_fade(t: Transition) -> bool:
        return any(fd.start_frame <= t.frame < fd.end_frame for fd in fade_list)

    kept += [c for c in cuts if not inside_fade(c)]
    kept += [g for g in gradual if not near_boundary(g.frame, cuts, fade_list, params, fps)]
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
    final += edge
    final.sort(key=lambda t: (t.frame, t.start_frame))
    return final
