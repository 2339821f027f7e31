"""The Ray engine's two actors (``map_batches`` callable classes).

- :class:`ReadStage` (CPU): one supervised decoder process per actor
  (:class:`~framepipe.engine.supervisor.DecoderProcess`), the same read stage and the same
  failed records as the local engine; frames prepared for the answering backend (e.g. its
  pixel values) before they enter the object store. Rows in: ``{"task": pickle of (task id,
  EngineTask)}``, one input per call. Rows out: ``{"out": pickle of ClipJob, "skipped": 0,
  "plan": b""}`` per clip, and one ``{"out": b"", "skipped": k, "plan": pickle of its
  InputPlan or b""}`` per input counting its clips skipped as done.
- :class:`GenerateStage` (GPU, or CPU on clusters without GPUs): loads the backend once and
  answers with :class:`~framepipe.answering.Answering` (for a backend that keeps requests in
  flight, a server, several batches at once in threads, their requests in one pool of
  ``max_concurrency``, so they never drain to zero between batches). Rows out:
  ``{"out": pickle of the final ClipResult, ...}`` per clip, the inputs' rows unchanged;
  ``load_s`` and ``generate_s`` carry the actor's own seconds (each on one row) for the
  run's summary; an error that stops the run (a model that does not load, decoders that
  die at start, a :class:`~framepipe.errors.StopRunError`) comes as a pickled StopRunError
  after the records made before it, so the driver stops with its one line. An actor that
  dies (killed, out of
  host memory) is restarted by Ray and its batch retried, so no clip is lost.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pickle
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from framepipe import registry
from framepipe.answering import Answering, AnswerSpec
from framepipe.engine.base import EngineTask
from framepipe.engine.supervisor import DecoderProcess, Skipped
from framepipe.engine.worker import WorkerSetup, WorkItem
from framepipe.errors import FramepipeError, StopRunError, one_line_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadSpec:
    """What every read actor needs (sent once, pickled)."""

    setup: WorkerSetup
    """The decoder's setup; what is ``done`` is left empty and sent by reference."""
    decode_timeout_s: float | None


@dataclass(frozen=True)
class GenerateSpec:
    """What every generation actor needs (sent once, pickled)."""

    answer: AnswerSpec
    imports: tuple[str, ...] = ()
    log_level: int = logging.WARNING


def _prepare(imports: tuple[str, ...], log_level: int) -> None:
    logging.getLogger("framepipe").setLevel(log_level)
    registry.in_worker()
    for name in imports:  # plug-ins (a user's samplers and source kinds)
        importlib.import_module(name)


class ReadStage:
    """The read actor: one supervised decoder process per actor."""

    def __init__(self, spec: bytes, done: list[Any]) -> None:
        import ray

        rs: ReadSpec = pickle.loads(spec)
        _prepare(rs.setup.imports, rs.setup.log_level)
        setup = dataclasses.replace(rs.setup, done=ray.get(done[0]) if done else {})
        # the child starts with the first input it must read (a resume may have none)
        self.decoder = DecoderProcess(setup, rs.decode_timeout_s)
        self.stopped: bytes | None = None
        """The row that stopped the run: every later input gets it (the driver stops), and
        no decoder starts for it only to be killed with this actor."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.stopped is not None:
            return _batch([(self.stopped, 0, b"")])
        rows = []
        for blob in batch["task"]:
            task_id, task = pickle.loads(blob)
            assert isinstance(task, EngineTask)
            try:
                for job in self.decoder.run(
                    WorkItem(int(task_id), task.item, dict(task.extra_key))
                ):
                    if isinstance(job, Skipped):
                        plan = pickle.dumps(job.plan) if job.plan else b""
                        rows.append((b"", job.count, plan))
                        continue
                    rows.append((pickle.dumps(job, protocol=5), 0, b""))
            except FramepipeError as exc:  # e.g. decoders that die at start: to the driver
                self.stopped = stop_row(exc)
                rows.append((self.stopped, 0, b""))
                break
        return _batch(rows)

    def __del__(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()


class GenerateStage:
    """The generation actor: the backend loads once here."""

    def __init__(self, spec: bytes) -> None:
        gs: GenerateSpec = pickle.loads(spec)
        _prepare(gs.imports, gs.log_level)
        self.answering: Answering | None = None
        self.failed: FramepipeError | None = None  # sent to the driver with the first batch
        try:
            self.answering = Answering(gs.answer)  # reads the model's config (no weights)
        except FramepipeError as exc:
            self.failed = exc
        self.load_s = 0.0  # the load seconds reported so far (the backend loads on first use)
        self.generate_s = 0.0  # the generation seconds reported so far
        self.lock = threading.Lock()  # batches answered at once report their seconds once

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        inputs = zip(batch["out"], batch["skipped"], batch["plan"])
        rows = [(b"", int(n), plan) for blob, n, plan in inputs if not blob]
        jobs: list[Any] = []
        stops: list[FramepipeError] = []
        for blob in batch["out"]:
            if blob:
                out = pickle.loads(blob)
                (stops if isinstance(out, Exception) else jobs).append(out)
        answering = self.answering
        if answering is None:
            assert self.failed is not None
            return _batch([*rows, (stop_row(self.failed), 0, b"")])
        try:
            for rec in answering.records(jobs):
                rows.append((pickle.dumps(rec, protocol=5), 0, b""))
        except FramepipeError as exc:  # the model does not load, or a stop: to the driver
            stops.append(exc)
        rows += [(stop_row(exc), 0, b"") for exc in stops]
        with self.lock:
            load_s, self.load_s = answering.load_s - self.load_s, answering.load_s
            gen_s, self.generate_s = answering.generate_s - self.generate_s, answering.generate_s
        return _batch(rows, load_s, gen_s)


def stop_row(exc: FramepipeError) -> bytes:
    """``exc`` as a row that stops the run on the driver: a :class:`StopRunError` with its
    one line (framepipe's errors with their own arguments would not unpickle as they are)."""
    stop = exc if type(exc) is StopRunError else StopRunError(one_line_error(exc))
    return pickle.dumps(stop)


def _batch(rows: list[tuple[bytes, int, bytes]], load_s: float = 0.0, gen_s: float = 0.0) -> Any:
    """A stage's output batch of ``(out, skipped, plan)`` rows; the actor's seconds go on
    the first row."""
    seconds = np.zeros((2, len(rows)))
    if rows:
        seconds[:, 0] = load_s, gen_s
    return {
        "out": np.array([r[0] for r in rows], dtype=object),
        "skipped": np.array([r[1] for r in rows], np.int64),
        "plan": np.array([r[2] for r in rows], dtype=object),
        "load_s": seconds[0],
        "generate_s": seconds[1],
    }
