"""Helpers the Ray engine's tests ship to Ray workers (imported there by name).

``EchoGenerator`` is a model-free generator: each clip's answer names its frame count and
the mean of its pixels, so answers depend on the frames the actor received. ``KillOnce``
wraps a generator and kills its own process (the generation actor) on its first call,
leaving a flag file so that the retried call, on the restarted actor, answers.
``StopsTheRun`` answers its first batch, then raises the error that stops a run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import StopRunError
from framepipe.generate.config import Answer


class EchoGenerator:
    """Answers from the pixels it is given (no model)."""

    def describe(self) -> dict[str, Any]:
        return {"id": "echo", "device": "cpu", "dtype": "uint8", "random_weights": False}

    def answer_each(self, requests: Sequence[Any]) -> list[Answer]:
        out = []
        for r in requests:
            mean = float(np.mean([np.asarray(i, np.float64).mean() for i in r.images]))
            text = f"{len(r.images)} frames, mean {mean:.3f}"
            out.append(Answer("p", [text for _ in r.questions], 0.0, 1, [1] * len(r.questions)))
        return out


class KillOnce:
    """``inner``'s answers, after killing this process once (``flag`` marks that it did)."""

    def __init__(self, inner: Any, flag: Path) -> None:
        self.inner = inner
        self.flag = flag

    def describe(self) -> dict[str, Any]:
        return dict(self.inner.describe())

    def answer_each(self, requests: Sequence[Any]) -> list[Any]:
        if not self.flag.exists():
            self.flag.write_text(str(os.getpid()))
            os._exit(9)
        return list(self.inner.answer_each(requests))


class StopsTheRun(EchoGenerator):
    """Answers the first batch, then raises :class:`StopRunError` (as a GPU left unusable
    by a CUDA error does)."""

    def __init__(self) -> None:
        self.calls = 0

    def answer_each(self, requests: Sequence[Any]) -> list[Answer]:
        self.calls += 1
        if self.calls > 1:
            raise StopRunError("cuda:0: CUDA error: an illegal memory access was encountered")
        return super().answer_each(requests)
