"""Per-frame features of the shot detector's tiny frames, and the distances between them.

Each frame gets colour and luma histograms, an 8x6 grid of block means, its tiny luma image
and its structure (how its gradient energy spreads over orientations and over the picture,
blind to exposure), compared by :func:`pair_distance` (0..1). A cut or a dissolve is a
change of *content*, not of exposure: camera auto-exposure, a sunset, a light switched on or
a brightness ramp change every pixel's level but not the picture. So every comparison can
also be made between the **exposure-normalised** frames (``normalised=True``): each frame's
luma and chroma have their means removed (the mean chroma is the colour cast that white
balance or a sunset's light shifts) and are divided by the frame's contrast (the spread of
luma and chroma together), then shown at a standard mean and contrast. A global gain (in
linear light or gamma-encoded: both scale luma and chroma alike), a luma offset or a colour
cast leaves those unchanged. Frames flatter than ``min_contrast`` are not stretched further,
so the noise of a flat or black frame is not blown up into structure. Histograms are binned
softly (each value shared between its two nearest bins), so a level drifting across a bin
edge moves the histogram a little, never by a whole bin at once.

The raw pictures are what changes are found on (a cut between a dark and a bright scene
is a big change there); the normalised ones decide whether the change is one of content.
The normalised grid and luma are derived from the raw ones and the frame's gain when asked
for, so only the normalised histograms are stored. The mean and spread of luma serve fades
(dark frames) and the keyframe sampler; so does the sharpness (variance of the Laplacian).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import numpy as np

from framepipe.types import SmallFrames

CONTRAST = 0.2
"""Contrast (root mean square spread of luma and chroma, 0..1 units) that every normalised
frame is shown at: about that of ordinary footage, so distances keep their usual scale."""

GRID = (8, 6)
"""Columns and rows of block means."""


@dataclass(frozen=True)
class Features:
    """Per-frame features of a set of small frames (rows follow ``indices``)."""

    indices: np.ndarray
    hist: np.ndarray
    """m x 32: soft histograms of chroma (4 x 4 bins of U, V) and luma (16 bins), each
    summing to 1."""
    hist_n: np.ndarray
    """The same of the exposure-normalised frame."""
    grid: np.ndarray
    """m x 144: block means (8 x 6) of Y, U, V in 0..1 (8-bit levels / 255)."""
    luma: np.ndarray
    """m x h x w luma in 0..1."""
    luma_mean: np.ndarray
    """Mean luma (0..1): what fades and dark frames are found on."""
    luma_std: np.ndarray
    chroma_mean: np.ndarray
    """m x 2: mean U and V (centred on 0): the colour cast that normalisation removes."""
    gain: np.ndarray
    """What normalisation multiplies the frame's deviations by (``CONTRAST`` over its
    contrast, the spread of luma and chroma together, floored at ``min_contrast``)."""
    sharpness: np.ndarray
    """Variance of the 4-neighbour Laplacian of the luma."""
    edges: np.ndarray
    """m x 58: the picture's *structure*, blind to exposure: how its
    exposure-normalised gradient energy is spread over orientations (8 soft bins over 180
    degrees, then the flatness share) and over an 8 x 6 grid of blocks (then the flatness
    share again), each part summing to 1; the flatness share is 1 for a flat field, whose
    noise is no structure. Two pictures with alike tones
    but different patterns (stripes and rings, a flat field and a fractal) differ here."""

    def __len__(self) -> int:
        return len(self.indices)

    def dark(self, level: float) -> np.ndarray:
        """Black frames: mean luma below ``level`` and little above it (mean plus spread
        below twice ``level``), so a dark picture with bright detail is no black frame."""
        return np.asarray((self.luma_mean < level) & (self.luma_mean + self.luma_std < 2 * level))

    def rows(self, keep: np.ndarray) -> Features:
        """The features of the rows ``keep`` (a boolean mask or row numbers)."""
        return Features(*(getattr(self, f.name)[keep] for f in fields(self)))

    def grid_of(self, rows: np.ndarray | slice, normalised: bool) -> np.ndarray:
        """Block means of ``rows``, exposure-normalised or not."""
        g = self.grid[rows]
        if not normalised:
            return g
        k = self.gain[rows][:, None]
        mean = (16.0 + 219.0 * self.luma_mean[rows]) / 255.0
        out = np.empty_like(g)
        out[:, 0::3] = _Y_MID + (g[:, 0::3] - mean[:, None]) * k
        cast = _C_MID + self.chroma_mean[rows] * (224.0 / 255.0)
        out[:, 1::3] = _C_MID + (g[:, 1::3] - cast[:, :1]) * k
        out[:, 2::3] = _C_MID + (g[:, 2::3] - cast[:, 1:]) * k
        return np.clip(out, 0.0, 1.0)

    def luma_of(self, rows: np.ndarray, normalised: bool) -> np.ndarray:
        """Tiny luma images of ``rows``, exposure-normalised or not."""
        y = self.luma[rows]
        if not normalised:
            return y
        k = self.gain[rows][:, None, None].astype(np.float32)
        mean = self.luma_mean[rows][:, None, None].astype(np.float32)
        return np.asarray(np.clip(0.5 + (y - mean) * k, 0.0, 1.0))


_Y_MID = (16.0 + 219.0 * 0.5) / 255.0
_C_MID = 128.0 / 255.0


STEPS = 8
"""Positions per bin that values are rounded to before soft binning (a 64th of the luma
range: finer than 8-bit levels spread over 16 bins)."""


def _soft_weights(n: int) -> np.ndarray:
    """``(n - 1) * STEPS + 1`` x ``n``: the share of each bin that a value at each rounded
    position (in bin units, bin centres at integers) goes to (linear between neighbours)."""
    pos = np.arange((n - 1) * STEPS + 1) / STEPS
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(n)[None, :]))


_W16, _W4 = _soft_weights(16), _soft_weights(4)


def _positions(x: np.ndarray, n: int) -> np.ndarray:
    """Values in bin units (``n`` bins, clamped at the ends) rounded to ``1 / STEPS``."""
    return np.rint(np.clip(x, 0.0, n - 1.0) * STEPS).astype(np.int64)


_LEVELS = np.arange(256, dtype=np.float64)
_Y_OF_LEVEL = np.clip((_LEVELS - 16.0) / 219.0, 0.0, 1.0)
_C_OF_LEVEL = (_LEVELS - 128.0) / 224.0
_C_OF_PAIR = (np.arange(64) * 4.0 + 1.5 - 128.0) / 224.0
"""Chroma of each group of four 8-bit levels (joint U, V counts are kept at that step)."""


def _luma_weights(y: np.ndarray) -> np.ndarray:
    """Share of each of the 16 luma bins that luma ``y`` (0..1, any shape) goes to."""
    return np.asarray(_W16[_positions(y * 16.0 - 0.5, 16)])


def _chroma_weights(c: np.ndarray) -> np.ndarray:
    """Share of each of the 4 chroma bins (edges 0.14 apart around grey) for chroma ``c``."""
    return np.asarray(_W4[_positions(np.clip(c, -0.5, 0.5) * 7.0 + 1.5, 4)])


CHUNK = 512
"""Frames whose features are computed at once (bounds the temporary arrays)."""


def compute_features(sf: SmallFrames, min_contrast: float = 0.05) -> Features:
    """Features of every frame of ``sf`` (limited-range YUV frames; see :class:`Features`)."""
    m = len(sf.frames)
    parts = [_features(sf.frames[k : k + CHUNK], min_contrast) for k in range(0, m, CHUNK)]
    if not parts:
        parts = [_features(sf.frames, min_contrast)]
    cols = [np.concatenate(col) for col in zip(*parts)]
    return Features(np.asarray(sf.indices, dtype=np.int64), *cols)


def _counts(index: np.ndarray, bins: int) -> np.ndarray:
    """Per-frame counts of ``index`` (m x pixels, each in ``0..bins - 1``)."""
    m = len(index)
    flat = index + (np.arange(m, dtype=np.int32) * bins)[:, None]
    return np.bincount(flat.ravel(), minlength=m * bins).reshape(m, bins).astype(np.float64)


def _features(yuv: np.ndarray, min_contrast: float) -> tuple[np.ndarray, ...]:
    """The columns of :class:`Features` after ``indices``, for the YUV frames ``yuv``.

    Everything but the pictures themselves comes from per-frame counts of the 8-bit
    levels: the mean, spread and contrast exactly, and the soft histograms, raw and
    normalised, by sharing each level's count between bins (each frame has its own
    mapping of levels once normalised)."""
    m, h, w, _ = yuv.shape
    npx = h * w
    planes = [yuv[..., c].reshape(m, -1).astype(np.int32) for c in range(3)]
    ny, nu, nv = (_counts(p, 256) for p in planes)
    mean = ny @ _Y_OF_LEVEL / npx
    std = np.sqrt(np.maximum(0.0, ny @ _Y_OF_LEVEL**2 / npx - mean**2))
    cast = np.stack([nu @ _C_OF_LEVEL, nv @ _C_OF_LEVEL], axis=1) / npx
    chroma = (nu @ _C_OF_LEVEL**2 + nv @ _C_OF_LEVEL**2) / npx - (cast**2).sum(axis=1)
    spread = np.sqrt(std**2 + np.maximum(0.0, chroma))
    gain = CONTRAST / np.maximum(spread, max(min_contrast, 1e-3))
    uv = _counts((planes[1] >> 2) * 64 + (planes[2] >> 2), 64 * 64).reshape(m, 64, 64)

    k = gain[:, None]
    luma_raw = ny @ _luma_weights(_Y_OF_LEVEL)
    y_norm = np.clip(0.5 + (_Y_OF_LEVEL[None, :] - mean[:, None]) * k, 0.0, 1.0)
    luma_norm = (ny[:, None, :] @ _luma_weights(y_norm))[:, 0]
    c_raw = _chroma_weights(_C_OF_PAIR)  # 64 x 4
    chroma_raw = c_raw.T @ uv @ c_raw
    u_norm = _chroma_weights((_C_OF_PAIR[None, :] - cast[:, :1]) * k)  # m x 64 x 4
    v_norm = _chroma_weights((_C_OF_PAIR[None, :] - cast[:, 1:]) * k)
    chroma_norm = np.swapaxes(u_norm, 1, 2) @ uv @ v_norm
    hist = np.concatenate([chroma_raw.reshape(m, 16), luma_raw], axis=1) / npx
    hist_n = np.concatenate([chroma_norm.reshape(m, 16), luma_norm], axis=1) / npx

    y = np.clip((yuv[..., 0].astype(np.float32) - 16.0) * (1.0 / 219.0), 0.0, 1.0)
    gw, gh = GRID
    bh, bw = max(1, h // gh), max(1, w // gw)
    rows = yuv[:, : bh * gh, : bw * gw].reshape(m, gh, bh, -1).sum(axis=2, dtype=np.int32)
    sums = rows.reshape(m, gh, gw, bw, 3).sum(axis=3).reshape(m, -1)
    grid = sums.astype(np.float32) * np.float32(1.0 / (255.0 * bh * bw))
    f32 = np.float32
    edges = _edges(y, gain).astype(f32)
    sharp = _sharpness(y)
    return hist.astype(f32), hist_n.astype(f32), grid, y, mean, std, cast, gain, sharp, edges


ORIENTATIONS = 8
"""Orientation bins of the structure descriptor (over 180 degrees)."""
FLAT = ORIENTATIONS
"""Column of ``edges`` that holds the flatness share."""
FLAT_ENERGY = 0.08
"""Mean normalised gradient magnitude (luma units at ``CONTRAST``, per tiny pixel) below
which a picture counts as partly flat, in proportion: a flat field is all flat, ordinary
footage (0.02-0.05 here) about half, fine detail (cellular automata, fractals: 0.1-0.15) not
at all. A scale this wide makes the share grow smoothly when structure fades in from a flat
field (a dissolve) instead of jumping on its first faint trace."""


def _edges(y: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The ``edges`` column of :class:`Features` for luma ``y`` (m x h x w, 0..1).

    Orientations are binned by their doubled angle (so opposite gradients agree), each
    gradient shared between the bins by a squared-cosine lobe (no arctangent: this runs on
    every frame)."""
    m, h, w = y.shape
    if h < 3 or w < 3:
        return np.zeros((m, ORIENTATIONS + GRID[0] * GRID[1] + 2))
    gx = (y[:, 1:-1, 2:] - y[:, 1:-1, :-2]) * np.float32(0.5)
    gy = (y[:, 2:, 1:-1] - y[:, :-2, 1:-1]) * np.float32(0.5)
    sq = gx * gx + gy * gy
    k = gain.astype(np.float32)[:, None, None]
    mag = np.sqrt(sq) * k
    total = mag.reshape(m, -1).mean(axis=1).astype(np.float64)
    inv = 1.0 / (sq + np.float32(1e-12))
    cos2, sin2 = (gx * gx - gy * gy) * inv, (2.0 * gx * gy) * inv
    orient = np.empty((m, ORIENTATIONS))
    lobe = np.empty_like(cos2)
    for b, phi in enumerate(np.arange(ORIENTATIONS) * (2 * np.pi / ORIENTATIONS)):
        np.multiply(cos2, np.float32(np.cos(phi)), out=lobe)
        lobe += sin2 * np.float32(np.sin(phi))
        np.maximum(lobe, 0.0, out=lobe)
        lobe *= lobe
        lobe *= mag
        orient[:, b] = lobe.reshape(m, -1).sum(axis=1)
    # each part sums to 1 - flat: structure in proportion to the gradient energy
    scale = np.maximum(total, FLAT_ENERGY)
    flat = np.maximum(0.0, 1.0 - total / FLAT_ENERGY)[:, None]
    orient *= (total / scale / np.maximum(orient.sum(axis=1), 1e-12))[:, None]
    gw, gh = GRID
    hh, ww = mag.shape[1] // gh * gh, mag.shape[2] // gw * gw
    blocks = mag[:, :hh, :ww].reshape(m, gh, hh // gh, gw, ww // gw).mean(axis=(2, 4))
    blocks = blocks.reshape(m, -1)
    blocks *= (total / scale / np.maximum(blocks.sum(axis=1), 1e-12))[:, None]
    return np.concatenate([orient, flat, blocks, flat], axis=1)


def _sharpness(luma: np.ndarray) -> np.ndarray:
    m, h, w = luma.shape
    if h <= 2 or w <= 2:
        return np.zeros(m)
    lap = (
        -4.0 * luma[:, 1:-1, 1:-1]
        + luma[:, :-2, 1:-1]
        + luma[:, 2:, 1:-1]
        + luma[:, 1:-1, :-2]
        + luma[:, 1:-1, 2:]
    )
    return np.asarray(lap.reshape(m, -1).var(axis=1), dtype=np.float64)


def merge_features(a: Features, b: Features) -> Features:
    """Rows of ``a`` and ``b`` together, sorted by frame index (``a`` wins on repeats)."""
    idx = np.concatenate([a.indices, b.indices])
    _, first = np.unique(idx, return_index=True)
    return Features(
        *(np.concatenate([getattr(a, f.name), getattr(b, f.name)])[first] for f in fields(Features))
    )


def pair_distance(
    f: Features, a: np.ndarray, b: np.ndarray, *, fine: bool = True, normalised: bool = False
) -> np.ndarray:
    """Distance (0..1) between rows ``a`` and ``b``: colour histograms, block layout and,
    with ``fine``, tiny pixels, averaged; of the exposure-normalised frames with
    ``normalised`` (a change of content only)."""
    hist = f.hist_n if normalised else f.hist
    hd = 0.25 * np.abs(hist[a] - hist[b]).sum(axis=1)
    ga, gb = f.grid_of(a, normalised), f.grid_of(b, normalised)
    gd = np.minimum(1.0, 4.0 * np.abs(ga - gb).mean(axis=1))
    ed = structure_distance(f.edges[a], f.edges[b])
    if not fine:
        return np.asarray((hd + gd + ed) / 3.0, dtype=np.float64)
    m = len(a)
    la, lb = f.luma_of(a, normalised), f.luma_of(b, normalised)
    pd = np.minimum(1.0, 4.0 * np.abs(la - lb).reshape(m, -1).mean(axis=1))
    return np.asarray((hd + gd + pd + ed) / 4.0, dtype=np.float64)


def structure_distance(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """Distance (0..1) between ``edges`` rows: half the L1 distance of the orientation part
    and of the layout part, averaged."""
    n = ORIENTATIONS + 1
    od = 0.5 * np.abs(ea[:, :n] - eb[:, :n]).sum(axis=1)
    ld = 0.5 * np.abs(ea[:, n:] - eb[:, n:]).sum(axis=1)
    return np.asarray(0.5 * (od + ld), dtype=np.float64)


def steps(f: Features, *, normalised: bool = False) -> np.ndarray:
    """``s[k]`` = distance from row ``k - 1`` to row ``k`` (``s[0] = 0``)."""
    m = len(f)
    out = np.zeros(m)
    if m > 1:
        k = np.arange(1, m)
        out[1:] = pair_distance(f, k - 1, k, normalised=normalised)
    return out


def structure_steps(f: Features) -> np.ndarray:
    """``e[k]`` = structure distance from row ``k - 1`` to row ``k`` (``e[0] = 0``)."""
    out = np.zeros(len(f))
    if len(f) > 1:
        out[1:] = structure_distance(f.edges[:-1], f.edges[1:])
    return out


def local_median(x: np.ndarray, half: int, exclude: int, q: float = 50.0) -> np.ndarray:
    """Median (or the ``q``-th percentile) of ``x`` over ``[k - half, k + half]`` without
    ``[k - exclude, k + exclude]``."""
    m = len(x)
    if m == 0:
        return x.copy()
    pad = np.concatenate([np.full(half, np.nan), x, np.full(half, np.nan)])
    width = 2 * half + 1
    keep = np.r_[0 : max(0, half - exclude), min(width, half + exclude + 1) : width]
    win = np.lib.stride_tricks.sliding_window_view(pad, width)[:, keep]
    whole = ~np.isnan(win).any(axis=1)  # one vectorised percentile for these rows
    med = np.zeros(m)
    if keep.size:
        med[whole] = np.percentile(win[whole], q, axis=1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows (tiny inputs)
            med[~whole] = np.nanpercentile(win[~whole], q, axis=1)
    return np.nan_to_num(med, nan=0.0)


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The runs of True in ``mask``, as ``[start, end)`` row pairs in order."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
