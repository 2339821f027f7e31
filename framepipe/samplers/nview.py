"""The n-view sampler: n views of a scene that cover its viewpoints as evenly as possible.

With camera poses, the distance between two views is an angle about the scene centre: the
larger of the angle between the two camera positions seen from the centre and the angle
between the two viewing directions. The scene centre is the point closest (least squares) to
all optical axes; when the axes do not converge in front of the cameras (a forward-facing
capture, a rig looking outward), only the viewing directions count. The sampler solves the
k-centre problem on that distance: farthest-point selection from every start view (from a
fixed, evenly spaced set of starts for big scenes), the best kept, then improved by swapping
views while the covering radius drops. The covering radius (the largest angle between any
view and its nearest chosen view) goes on the record as ``coverage_radius_deg``.

Without poses, views that differ most in appearance are chosen the same way, on tiny colour
thumbnails from ``source.read_small`` (a cheap decode); when there is no source or every view
looks the same, n views evenly spaced in name order. A source that measures what each view
sees of a surface (``source.visible_surface``: rendered 3D models, from a dense candidate
ring) gets the views that together see the most of it instead (:mod:`.surface`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.errors import FramepipeError, SamplingError
from framepipe.samplers.base import DEFAULT_OVERFLOW, apply_overflow, check_args, register_sampler
from framepipe.samplers.surface import surface_coverage
from framepipe.samplers.uniform import uniform_indices
from framepipe.types import ClipSpec, Selection, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)

SIGNATURE_SIZE = (16, 12)
"""Width x height of the colour thumbnails compared when there are no poses."""
MAX_SIGNATURES = 1024
"""At most this many thumbnails are compared (every k-th view of a longer clip)."""
_FULL_MATRIX_MAX = 2048
"""Up to this many views, all pairwise distances are computed once (32 MiB at most)."""
_MAX_STARTS = 256
_START_BUDGET = 4_000_000
_SAME_LOOK = 2.0
"""Below this RMS difference (0..255) between the most different views, all look alike."""
DEFAULTS: dict[str, Any] = {
    "method": "auto",
    "overflow": DEFAULT_OVERFLOW,
    "signature_size": SIGNATURE_SIZE,
    "max_signatures": MAX_SIGNATURES,
}
"""The options with a default of their own; ``resolution`` and ``voxels`` take the defaults
of the source's :meth:`~framepipe.sources.base.Source.visible_surface`, which they are
passed to."""
OPTIONS = (*DEFAULTS, "resolution", "voxels")


# -- geometry ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ViewGeometry:
    """Unit vectors that place each posed view about the scene."""

    centre: np.ndarray
    """The scene centre (world coordinates)."""
    positions: np.ndarray | None
    """N x 3 unit vectors from the centre to each camera; None when the centre is not
    meaningful (axes that do not converge in front of the cameras)."""
    axes: np.ndarray
    """N x 3 unit viewing directions (the camera's -z axis)."""

    @property
    def distance(self) -> str:
        if self.positions is None:
            return "angle between viewing directions"
        return "max(angle between camera positions about the centre, angle between directions)"


def scene_centre(poses: np.ndarray) -> tuple[np.ndarray, bool]:
    """The point closest (least squares) to every optical axis, and whether it is a real
    point of convergence (well conditioned and in front of most cameras). When it is not,
    the mean camera position is returned with False."""
    pos = poses[:, :3, 3]
    d = -poses[:, :3, 2]
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    mean = pos.mean(axis=0)
    k = len(poses)
    if k < 2:
        return mean, False
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # k x 3 x 3
    a = proj.sum(axis=0)
    b = np.einsum("kij,kj->i", proj, pos)
    eig = np.linalg.eigvalsh(a)
    if eig[0] < 1e-3 * k:  # axes (nearly) parallel: no point of convergence
        return mean, False
    c = np.linalg.solve(a, b)
    to_c = c[None] - pos
    dist = np.linalg.norm(to_c, axis=1)
    in_front = float(np.mean(np.einsum("ij,ij->i", to_c, d) > 0))
    spread = float(np.linalg.norm(pos - mean, axis=1).max())
    if in_front < 0.75 or not np.all(dist > 1e-9) or float(np.median(dist)) > 50 * (spread + 1e-12):
        return mean, False
    return c, True


def view_geometry(poses: np.ndarray) -> ViewGeometry:
    """:class:`ViewGeometry` of camera-to-world poses (N x 4 x 4, OpenGL convention)."""
    poses = np.asarray(poses, dtype=np.float64)
    axes = -poses[:, :3, 2]
    axes = axes / np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-12)
    centre, ok = scene_centre(poses)
    positions = None
    if ok:
        v = poses[:, :3, 3] - centre[None]
        positions = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return ViewGeometry(centre, positions, axes)


def _angles_deg(vs: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angles (degrees) between each row of ``vs`` and ``v`` (unit vectors)."""
    return np.degrees(np.arccos(np.clip(vs @ v, -1.0, 1.0)))


class Metric:
    """Distances from one view to all N views, with the full matrix kept when N is small."""

    def __init__(
        self,
        n: int,
        row_fn: Callable[[int], np.ndarray],
        full_fn: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self.n = n
        self._row_fn = row_fn
        self._full: np.ndarray | None = None
        if n <= _FULL_MATRIX_MAX:
            if full_fn is not None:
                self._full = full_fn()
            else:
                self._full = np.stack([row_fn(i) for i in range(n)]) if n else np.zeros((0, 0))

    def row(self, i: int) -> np.ndarray:
        return self._full[i] if self._full is not None else self._row_fn(i)

    def rows(self, idx: Sequence[int]) -> np.ndarray:
        if self._full is not None:
            return self._full[list(idx)]
        return np.stack([self._row_fn(i) for i in idx])

    @classmethod
    def angular(cls, geom: ViewGeometry) -> Metric:
        pos, axes = geom.positions, geom.axes

        def row(i: int) -> np.ndarray:
            d = _angles_deg(axes, axes[i])
            if pos is not None:
                d = np.maximum(d, _angles_deg(pos, pos[i]))
            return d

        def full() -> np.ndarray:
            d = np.degrees(np.arccos(np.clip(axes @ axes.T, -1.0, 1.0)))
            if pos is not None:
                d = np.maximum(d, np.degrees(np.arccos(np.clip(pos @ pos.T, -1.0, 1.0))))
            np.fill_diagonal(d, 0.0)
            return d

        return cls(len(axes), row, full)

    @classmethod
    def euclidean(cls, feats: np.ndarray) -> Metric:
        """RMS difference between feature vectors (thumbnails in 0..255)."""
        f = np.asarray(feats, dtype=np.float64)
        dim = max(1, f.shape[1]) if f.ndim == 2 else 1

        def row(i: int) -> np.ndarray:
            return np.sqrt(np.mean((f - f[i][None]) ** 2, axis=1))

        def full() -> np.ndarray:
            sq = np.einsum("ij,ij->i", f, f)
            d2 = (sq[:, None] + sq[None, :] - 2.0 * (f @ f.T)) / dim
            np.fill_diagonal(d2, 0.0)
            return np.sqrt(np.maximum(d2, 0.0))

        return cls(len(f), row, full)


def covering_radius(metric: Metric, chosen: Sequence[int]) -> float:
    """The largest distance from any view to its nearest chosen view."""
    if not chosen or metric.n == 0:
        return float("inf") if metric.n else 0.0
    return float(metric.rows(sorted(set(chosen))).min(axis=0).max())


def _key(mind: np.ndarray) -> tuple[float, int, float]:
    """Order of solutions: covering radius, then how many views sit at it, then the mean."""
    r = float(mind.max())
    return (round(r, 9), int(np.count_nonzero(mind >= r - 1e-9)), round(float(mind.mean()), 9))


def _greedy(metric: Metric, n: int, first: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """Farthest-point selection from the views ``first``; ties go to the lowest index."""
    chosen = list(first)
    mind = metric.rows(chosen).min(axis=0)
    taken = np.zeros(metric.n, dtype=bool)
    taken[chosen] = True
    while len(chosen) < n:
        score = np.where(taken, -1.0, mind)
        j = int(np.argmax(score))
        chosen.append(j)
        taken[j] = True
        mind = np.minimum(mind, metric.row(j))
    return chosen, mind


def _refine(
    metric: Metric,
    chosen: list[int],
    fixed: int,
    *,
    neighbours: int = 16,
    max_rounds: int = 200,
) -> list[int]:
    """Swap one chosen view (after the first ``fixed``) for a view near the worst-covered
    view while that improves :func:`_key`."""
    chosen = list(chosen)
    rows = metric.rows(chosen)
    best = _key(rows.min(axis=0))
    for _ in range(max_rounds):
        mind = rows.min(axis=0)
        worst = int(np.argmax(mind))
        taken = set(chosen)
        near = [int(j) for j in np.argsort(metric.row(worst), kind="stable") if int(j) not in taken]
        cand = [(x, metric.row(x)) for x in near[:neighbours]]
        move: tuple[int, int, np.ndarray] | None = None
        for ci in range(fixed, len(chosen)):
            others = np.delete(rows, ci, axis=0).min(axis=0) if len(chosen) > 1 else None
            for x, rx in cand:
                new_min = rx if others is None else np.minimum(others, rx)
                k = _key(new_min)
                if k < best:
                    best, move = k, (ci, x, rx)
        if move is None:
            break
        ci, x, rx = move
        chosen[ci] = x
        rows[ci] = rx
    return chosen


def k_centre(
    metric: Metric, n: int, *, fixed: Sequence[int] = (), max_starts: int = _MAX_STARTS
) -> list[int]:
    """n views (sorted) that make the covering radius small; ``fixed`` views are always in.

    Farthest-point selection (a 2-approximation) from up to ``max_starts`` start views
    (all views when there are few, otherwise evenly spaced ones), the best result kept and
    then improved by single swaps. Deterministic.
    """
    if n >= metric.n:
        return list(range(metric.n))
    if fixed:
        chosen, _ = _greedy(metric, n, list(fixed))
        return sorted(_refine(metric, chosen, len(fixed)))
    # Each start costs n distance rows of N: bound the work for big scenes.
    max_starts = max(8, min(max_starts, _START_BUDGET // (n * metric.n)))
    starts = range(metric.n) if metric.n <= max_starts else uniform_indices(0, metric.n, max_starts)
    best: tuple[tuple[float, int, float], list[int]] | None = None
    for s in starts:
        chosen, mind = _greedy(metric, n, [s])
        k = _key(mind)
        if best is None or k < best[0]:
            best = (k, chosen)
    assert best is not None
    return sorted(_refine(metric, best[1], 0))


# -- the sampler ---------------------------------------------------------------------------
def _poses_of(info: SourceInfo, idx: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """The indices among ``idx`` whose view has a pose, and those poses (k x 4 x 4)."""
    if info.views is None:
        return [], np.zeros((0, 4, 4))
    have = [i for i in idx if info.views[i].pose_c2w is not None]
    poses = np.array([info.views[i].pose_c2w for i in have], dtype=np.float64).reshape(-1, 4, 4)
    return have, poses


def coverage_of(
    info: SourceInfo, chosen: Sequence[int], clip: ClipSpec | None = None
) -> dict[str, Any] | None:
    """Covering radius (degrees) of ``chosen`` over the posed views of ``clip`` (the whole
    source by default); None without at least two posed views. For comparing samplers."""
    lo, hi = (0, info.num_frames) if clip is None else (clip.start_frame, clip.end_frame)
    have, poses = _poses_of(info, range(lo, hi))
    if len(have) < 2:
        return None
    geom = view_geometry(poses)
    metric = Metric.angular(geom)
    pos = {v: k for k, v in enumerate(have)}
    local = [pos[i] for i in chosen if i in pos]
    radius = covering_radius(metric, local) if local else None
    return {
        "coverage_radius_deg": None if radius is None else round(radius, 4),
        "distance": geom.distance,
        "scene_centre": [round(float(c), 6) + 0.0 for c in geom.centre],
        "views_with_pose": len(have),
    }


def _appearance_metric(
    source: Source | None,
    start: int,
    end: int,
    size: tuple[int, int],
    *,
    include: Sequence[int] = (),
    max_views: int = MAX_SIGNATURES,
) -> tuple[Metric, list[int]] | None:
    """Thumbnail distances between views of ``[start, end)`` (every ``step``-th view when
    there are more than ``max_views``, plus ``include``), and the index of each; None when
    there is no source, it cannot give thumbnails, or every view looks the same."""
    if source is None:
        return None
    step = max(1, -(-(end - start) // max_views))
    idx = list(range(start, end, step))
    try:
        parts = [source.read_small(start, end, size=size, step=step)]
        for i in sorted(set(include) - set(idx)):
            parts.append(source.read_small(i, i + 1, size=size))
            idx.append(i)
    except FramepipeError as exc:
        log.warning("%s: no thumbnails for the n-view sampler (%s); spacing evenly", source, exc)
        return None
    thumbs = np.concatenate(parts)
    feats = thumbs.reshape(len(thumbs), -1).astype(np.float64)
    metric = Metric.euclidean(feats)
    if metric.n < 2 or covering_radius(metric, [0]) * 2 < _SAME_LOOK:
        return None  # every view looks the same: appearance tells nothing
    return metric, idx


def nview_settings(n: int, params: Mapping[str, Any]) -> tuple[str, tuple[int, int], int]:
    """The n-view sampler's check of its settings: its options, and the method, thumbnail
    size and most thumbnails they give."""
    check_args("nview", n, params, OPTIONS)
    method: str = params.get("method", DEFAULTS["method"])
    raw_size = params.get("signature_size", SIGNATURE_SIZE)
    max_sig = params.get("max_signatures", MAX_SIGNATURES)
    if isinstance(max_sig, bool) or not isinstance(max_sig, int) or max_sig < 2:
        raise SamplingError(f"max_signatures ({max_sig!r}) must be an integer >= 2")
    try:
        size = (int(raw_size[0]), int(raw_size[1]))
    except (TypeError, ValueError, IndexError) as exc:
        raise SamplingError(f"signature_size ({raw_size!r}) must be [width, height]") from exc
    if method not in ("auto", "poses", "appearance", "even"):
        raise SamplingError(f"unknown nview method {method!r} (auto, poses, appearance, even)")
    return method, size, max_sig


def nview(
    info: SourceInfo,
    clip: ClipSpec,
    *,
    n: int,
    source: Source | None = None,
    **params: Any,
) -> Selection:
    """n views covering the scene (see the module doc). Parameters:

    - ``method``: ``auto`` (poses when views have them, else appearance, else even
      spacing), ``poses``, ``appearance`` or ``even``;
    - ``overflow``: when the scene has fewer views than n (``repeat_last``, ``all``,
      ``error``);
    - ``signature_size``: ``[w, h]`` of the appearance thumbnails (default 16 x 12);
    - ``max_signatures``: at most this many thumbnails (every k-th view beyond; 1024);
    - ``resolution``, ``voxels``: how finely a source that measures its surface (a render)
      measures it (64 pixels, 32 cells a side); such a source's views are chosen by surface
      coverage, whatever the method.
    """
    method, size, max_sig = nview_settings(n, params)
    overflow = params.get("overflow", DEFAULTS["overflow"])
    if source is not None:
        size_kw = {k: params[k] for k in ("resolution", "voxels") if k in params}
        surface = source.visible_surface(**size_kw)
        if surface is not None:
            return surface_coverage(surface, n, overflow, clip, info.id)
    out_params: dict[str, Any] = {"n": n, "method": method, "overflow": overflow}
    if "signature_size" in params:
        out_params["signature_size"] = list(size)
    if "max_signatures" in params:
        out_params["max_signatures"] = max_sig
    start, end = clip.start_frame, clip.end_frame
    candidates = list(range(start, end))
    if not candidates:
        raise SamplingError(f"{info.id}: empty clip [{start}, {end})")
    have, poses = _poses_of(info, candidates)
    if method == "poses" and len(have) < 2:
        raise SamplingError(
            f"{info.id}: method 'poses' needs camera poses ({len(have)} posed view(s))"
        )

    used: str
    found: dict[str, Any] = {}
    if n >= len(candidates):
        chosen = apply_overflow(candidates, n, overflow, clip, info.id)
        used = "all"
    elif method == "even":
        chosen, used = uniform_indices(start, end, n), "even"
    elif method != "appearance" and len(have) >= n:
        metric = Metric.angular(view_geometry(poses))
        chosen = [have[k] for k in k_centre(metric, n)]
        used = "poses"
    else:
        fixed = have if method != "appearance" else []  # too few posed views: take them all
        found_a = _appearance_metric(source, start, end, size, include=fixed, max_views=max_sig)
        if found_a is not None:
            metric_a, idx = found_a
            local = {v: k for k, v in enumerate(idx)}
            picked = k_centre(metric_a, n, fixed=[local[i] for i in fixed])
            chosen = sorted(idx[k] for k in picked)
            found["appearance_radius"] = round(covering_radius(metric_a, picked), 4)
            if len(idx) < len(candidates):
                found["appearance_candidates"] = len(idx)
            used = "appearance" if not fixed else "poses+appearance"
        else:
            fixed_set = set(fixed)
            rest = [i for i in candidates if i not in fixed_set]
            pick = uniform_indices(0, len(rest), n - len(fixed)) if n > len(fixed) else []
            chosen = sorted(fixed + [rest[k] for k in pick])
            used = "even" if not fixed else "poses+even"
    cov = coverage_of(info, chosen, clip)
    extra: dict[str, Any] = {
        "method": used,
        "coverage_radius_deg": None if cov is None else cov["coverage_radius_deg"],
        **found,
        "views": len(candidates),
        "views_with_pose": len(have),
    }
    if cov is not None:
        extra["distance"] = cov["distance"]
        extra["scene_centre"] = cov["scene_centre"]
    return Selection(tuple(chosen), "nview", out_params, extra)


register_sampler("nview", defaults=DEFAULTS, check=nview_settings)(nview)
