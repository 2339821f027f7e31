"""Plug-ins that raise ordinary exceptions (bugs, not crashes) inside the engine's workers.

Tests import this module by name, and workers import it because it registers a source kind
and holds a sampler (see :func:`framepipe.engine.worker.plugin_modules`).

``FaultSource`` claims ``*.fault`` files: a synthetic 30-frame, 30 fps video of flat
frames. When the file name says so, reading a frame of 10..19 (the second of three
0.34-second clips) returns a batch that breaks *after* the source's own code, where the
stage functions do not expect trouble:

- ``view``: a view whose ``to_json`` divides by zero (building the record raises);
- ``pickle``: a view whose intrinsics cannot be pickled (sending the clip raises).

``close`` in the name makes closing the source divide by zero. ``zero_div`` is a sampler
like ``uniform`` that divides by zero on clip 1 of inputs whose name says ``zdiv``.
"""

from __future__ import annotations

import os
import types
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from framepipe.samplers.uniform import uniform
from framepipe.sources.base import Source, register_source
from framepipe.types import ClipSpec, FrameBatch, Selection, SourceInfo, ViewInfo

NUM_FRAMES = 30
FAULTY_FRAMES = range(10, 20)


@dataclass(frozen=True)
class FaultyView(ViewInfo):
    """A view whose JSON form computes a field of view from a zero focal length."""

    focal_px: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["fov_ratio"] = 32 / self.focal_px
        return out


@register_source
class FaultSource(Source):
    kind: ClassVar[str] = "fault"
    extensions: ClassVar[frozenset[str]] = frozenset({".fault"})

    def info(self) -> SourceInfo:
        return SourceInfo(
            id=str(self.path),
            kind=self.kind,
            num_frames=NUM_FRAMES,
            width=32,
            height=24,
            fps=Fraction(30),
            timestamps_s=tuple(i / 30 for i in range(NUM_FRAMES)),
            duration_s=NUM_FRAMES / 30,
        )

    def read(self, indices: Sequence[int]) -> FrameBatch:
        frames = np.zeros((len(indices), 24, 32, 3), np.uint8)
        for k, i in enumerate(indices):
            frames[k] = 8 * i
        name = self.path.name
        views: tuple[ViewInfo, ...] | None = None
        if any(i in FAULTY_FRAMES for i in indices):
            if "view" in name:
                views = tuple(FaultyView(f"f{i}") for i in indices)
            elif "pickle" in name:
                proxy = types.MappingProxyType({"fx": 30.0, "fy": 30.0})
                views = tuple(ViewInfo(f"f{i}", intrinsics=proxy) for i in indices)
        ts = tuple(i / 30 for i in indices)
        return FrameBatch(frames, tuple(indices), timestamps_s=ts, views=views)

    def close(self) -> None:
        if "close" in self.path.name:
            _ = 1 / 0


def zero_div(info: SourceInfo, clip: ClipSpec, *, n: int, **params: Any) -> Selection:
    if "zdiv" in os.path.basename(info.id) and clip.index == 1:
        _ = n / 0
    return uniform(info, clip, n=n, **params)
