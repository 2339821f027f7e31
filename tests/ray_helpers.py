"""Helpers the Ray engine's tests ship to Ray workers (imported there by name).

``EchoGenerator`` is a model-free generator: each clip's answer names its frame count and
the mean of its pixels, so answers depend on the frames the actor received. ``KillOnce``
wraps a generator and kills its own process (the generation actor) on its first call,
leaving a flag file so that the retried call, on the restarted actor, answers.
``SlowEcho`` takes a known time per batch. ``on_node`` is a sampler like ``uniform`` (after
``delay_s``) whose records name the node that read them: the process id of the node's
raylet (each node of a cluster has its own).
``StopsTheRun`` answers its first batch, then raises the error that stops a run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import StopRunError
from framepipe.generate.config import Answer
from framepipe.samplers.uniform import uniform
from framepipe.types import ClipSpec, Selection, SourceInfo


def on_node(
    info: SourceInfo, clip: ClipSpec, *, n: int, delay_s: float = 0.0, source: Any = None
) -> Selection:
    """``uniform``'s frames, ``delay_s`` later; ``selection.raylet_pid`` names the node."""
    time.sleep(delay_s)
    sel = uniform(info, clip, n=n)
    raylet = int(os.environ.get("RAY_RAYLET_PID", "0"))
    return Selection(sel.indices, "on_node", {"n": n, "delay_s": delay_s}, {"raylet_pid": raylet})


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


class SlowEcho(EchoGenerator):
    """:class:`EchoGenerator` taking ``delay_s`` per batch it answers."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def answer_each(self, requests: Sequence[Any]) -> list[Answer]:
        time.sleep(self.delay_s)
        return super().answer_each(requests)


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
