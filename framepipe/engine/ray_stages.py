"""The Ray engine's two actors (``map_batches`` callable classes).

- :class:`ReadStage` (CPU): one supervised decoder process per actor
  (:class:`~framepipe.engine.supervisor.DecoderProcess`), the same read stage and the same
  failed records as the local engine; frames prepared for the answering backend (e.g. its
  pixel values) before they enter the object store. Rows in: ``{"task": pickle of (task id,
  EngineTask)}``, one input per call. Rows out: ``{"out": pickle of ClipJob, "skipped": 0}``
  per clip, and one ``{"out": b"", "skipped": k}`` per input counting its clips skipped as
  done.
- :class:`GenerateStage` (GPU, or CPU on clusters without GPUs): loads the backend once and
  answers with :class:`~framepipe.answering.Answering`. Rows out: ``{"out": pickle of the
  final ClipResult, "skipped": 0}`` per clip, the skip counters unchanged; an error that
  stops the run (:class:`~framepipe.errors.StopRunError`) comes as its pickle after the
  records made before it. An actor that dies (killed, out of host memory) is restarted by
  Ray and its batch retried, so no clip is lost.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from framepipe.answering import Answering, AnswerSpec
from framepipe.engine.base import EngineTask
from framepipe.engine.supervisor import DecoderProcess, Skipped
from framepipe.engine.worker import WorkerSetup, WorkItem
from framepipe.errors import StopRunError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadSpec:
    """What every read actor needs (sent once, pickled)."""

    setup: WorkerSetup
    """The decoder's setup; its ``done_keys`` are left empty and sent by reference."""
    decode_timeout_s: float | None


@dataclass(frozen=True)
class GenerateSpec:
    """What every generation actor needs (sent once, pickled)."""

    answer: AnswerSpec
    imports: tuple[str, ...] = ()
    log_level: int = logging.WARNING


def _prepare(imports: tuple[str, ...], log_level: int) -> None:
    logging.getLogger("framepipe").setLevel(log_level)
    for name in imports:  # plug-ins (a user's samplers and source kinds)
        importlib.import_module(name)


class ReadStage:
    """The read actor: one supervised decoder process per actor."""

    def __init__(self, spec: bytes, done_keys: list[Any]) -> None:
        import ray

        rs: ReadSpec = pickle.loads(spec)
        _prepare(rs.setup.imports, rs.setup.log_level)
        done: frozenset[str] = frozenset(ray.get(done_keys[0])) if done_keys else frozenset()
        setup = dataclasses.replace(rs.setup, done_keys=done)
        self.decoder = DecoderProcess(setup, rs.decode_timeout_s)
        self.decoder.start()  # the child starts (imports) while Ray schedules the first task

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out: list[bytes] = []
        skipped: list[int] = []
        for blob in batch["task"]:
            task_id, task = pickle.loads(blob)
            assert isinstance(task, EngineTask)
            for job in self.decoder.run(WorkItem(int(task_id), task.item, dict(task.extra_key))):
                if isinstance(job, Skipped):
                    out.append(b"")
                    skipped.append(job.count)
                    continue
                out.append(pickle.dumps(job, protocol=5))
                skipped.append(0)
        return {"out": np.array(out, dtype=object), "skipped": np.array(skipped, np.int64)}

    def __del__(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()


class GenerateStage:
    """The generation actor: the backend loads once here."""

    def __init__(self, spec: bytes) -> None:
        gs: GenerateSpec = pickle.loads(spec)
        _prepare(gs.imports, gs.log_level)
        self.answering = Answering(gs.answer)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out: list[bytes] = []
        skipped: list[int] = []
        jobs = []
        for blob, count in zip(batch["out"], batch["skipped"]):
            if blob:
                jobs.append(pickle.loads(blob))
            else:
                out.append(b"")
                skipped.append(int(count))
        try:
            for rec in self.answering.records(jobs):
                out.append(pickle.dumps(rec, protocol=5))
                skipped.append(0)
        except StopRunError as exc:  # to the driver, which stops the run
            out.append(pickle.dumps(exc))
            skipped.append(0)
        return {"out": np.array(out, dtype=object), "skipped": np.array(skipped, np.int64)}
