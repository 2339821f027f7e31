"""The Ray engine's generate stage: an actor (GPU, or CPU on clusters without GPUs) that loads
the model once and answers batches of decoded clips with the caption run's own answering
(:class:`framepipe.engine.answer.Answerer`).

Rows in: the read stage's (``job``, ``skipped``). Rows out: ``{"record": pickle of the final
ClipResult, "skipped": 0}`` per clip (a clip that failed before generation passes through as
its failed record, with the run's fields), and the ``skipped`` counters unchanged
(``record`` empty). A generation error is a failed record (``stage: generate``); an actor
that dies (killed, out of host memory) is restarted by Ray and its batch retried, so no clip
is lost.
"""

from __future__ import annotations

import importlib
import logging
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from framepipe.engine.answer import Answerer
from framepipe.stages import ClipJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateSpec:
    """What every generation actor needs (sent once, pickled)."""

    model: Any
    """The :class:`~framepipe.generate.ModelConfig` to load (unless ``generator`` is given)."""
    settings: Any
    """The :class:`~framepipe.generate.GenerationSettings`."""
    questions: tuple[str, ...] | None
    system: str | None
    gen_json: dict[str, Any]
    batch_size: int = 1
    generator: Any = None
    """An already made generator to use as is (tests; a small model shipped to the actors)."""
    imports: tuple[str, ...] = ()
    log_level: int = logging.WARNING


class GenerateStage:
    """The generation actor (``map_batches`` callable class): the model loads once here."""

    def __init__(self, spec: bytes) -> None:
        gs: GenerateSpec = pickle.loads(spec)
        logging.getLogger("framepipe").setLevel(gs.log_level)
        for name in gs.imports:
            importlib.import_module(name)
        if gs.generator is not None:
            self.gen = gs.generator
        else:
            from framepipe.generate import Generator

            self.gen = Generator.load(gs.model, gs.settings)
        info = dict(self.gen.describe())
        self.answerer = Answerer(gs.questions, gs.system, info, gs.gen_json)
        self.batch_size = max(1, int(gs.batch_size))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out: list[bytes] = []
        skipped: list[int] = []
        pending: list[ClipJob] = []

        def flush() -> None:
            for rec in self.answerer.answer(self.gen, pending):
                out.append(pickle.dumps(rec, protocol=5))
                skipped.append(0)
            pending.clear()

        for blob, count in zip(batch["job"], batch["skipped"]):
            if not blob:
                out.append(b"")
                skipped.append(int(count))
                continue
            job: ClipJob = pickle.loads(blob)
            if not job.ok:
                out.append(pickle.dumps(self.answerer.passthrough(job.record), protocol=5))
                skipped.append(0)
                continue
            pending.append(job)
            if len(pending) >= self.batch_size:
                flush()
        if pending:
            flush()
        return {"record": np.array(out, dtype=object), "skipped": np.array(skipped, np.int64)}
