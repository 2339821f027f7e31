"""Greedy visible-surface coverage: the n views of a 3D model that together see the most of
its surface, from what its source measured (:class:`~framepipe.types.VisibleSurface`).

The first pick is the view that sees the most surface (each cell weighted by how squarely it
is seen); each next pick adds the most not-yet-seen surface (a cell counts with the best
weight any chosen view gives it; ties: lowest index). Indices come back in view order
(around the orbit / down the sphere).
"""

from __future__ import annotations

import numpy as np

from framepipe.samplers.base import OverflowPolicy, apply_overflow
from framepipe.types import ClipSpec, Selection, VisibleSurface


def surface_coverage(
    surface: VisibleSurface, n: int, overflow: OverflowPolicy, clip: ClipSpec, source_id: str
) -> Selection:
    """The n views that cover the most visible surface, with the coverage they reach, the
    order they were picked in and what each added. When there are fewer views than n, all of
    them, completed by the ``overflow`` policy as for any clip shorter than n."""
    keys_per_view, w_per_view = surface.cells, surface.weights
    num = len(surface)
    all_keys = np.unique(np.concatenate(keys_per_view)) if num else np.zeros(0, np.int64)
    best = np.zeros(len(all_keys))
    pos = [np.searchsorted(all_keys, k) for k in keys_per_view]
    total = float(len(all_keys))  # every surface cell any candidate sees, face-on
    chosen: list[int] = []
    gains: list[float] = []
    solo = [float(w.sum()) for w in w_per_view]
    for _ in range(min(n, num)):
        gain = np.array(
            [
                -1.0 if i in chosen else float(np.maximum(w_per_view[i] - best[pos[i]], 0).sum())
                for i in range(num)
            ]
        )
        pick = int(np.argmax(gain))  # first maximum: lowest index wins ties
        chosen.append(pick)
        gains.append(float(gain[pick]))
        best[pos[pick]] = np.maximum(best[pos[pick]], w_per_view[pick])
    coverage = float(best.sum() / total) if total else 0.0
    indices = tuple(sorted(chosen))
    return Selection(
        tuple(apply_overflow(list(indices), n, overflow, clip, source_id)),
        "nview",
        {"n": n, "overflow": overflow, "resolution": surface.resolution, "voxels": surface.voxels},
        {
            "method": "greedy visible-surface coverage (render source)",
            "candidates": num,
            "coverage": round(coverage, 4),
            "greedy_order": chosen,
            "gain": [round(g / total, 4) if total else 0.0 for g in gains],
            "visible": [round(solo[i] / total, 4) if total else 0.0 for i in indices],
        },
    )
