"""The code that runs inside a decoding worker process of the local engine.

A worker talks to the main process over one duplex pipe. It receives an input, runs
:func:`framepipe.pipeline.iter_clip_jobs` on it, and for every clip sends:

- ``("clip", key, clip)`` just before sampling and reading it (so that the main process
  knows which clip a hung or crashed decoder was on),
- ``("job", job, packed_frames)`` when the clip is read, then waits for ``("next",)``: that
  credit is how the main process bounds the number of decoded clips in memory,
- ``("end", skipped)`` when the input has no more clips.

A worker says ``("ready",)`` once it has started. Log records are forwarded as
``("log", level, logger_name, message)``. The worker ignores Ctrl-C (the main process
stops it) and exits as soon as it finds the pipe closed, so it does not outlive a killed
main process by more than the clip it is on.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from framepipe.discover import Input
from framepipe.engine.transfer import pack_frames
from framepipe.pipeline import ClipJob, SampleConfig, iter_clip_jobs
from framepipe.types import ClipSpec, one_line_error

Prepare = Callable[[ClipJob], None]
"""A picklable function run on each decoded clip inside the worker (e.g. saving frames)."""


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, sent once when it starts."""

    cfg: SampleConfig
    done_keys: frozenset[str] = frozenset()
    prepare: Prepare | None = None
    send_frames: bool = True
    use_shm: bool = True
    imports: tuple[str, ...] = ()
    """Modules to import first (plug-ins: user samplers and source kinds registered there)."""
    log_level: int = logging.WARNING


@dataclass(frozen=True)
class WorkItem:
    """One input for a worker; ``skip`` holds clip keys not to read again after a restart."""

    task_id: int
    item: Input
    extra_key: dict[str, Any] = field(default_factory=dict)
    skip: frozenset[str] = frozenset()


_SEND_LOCK = threading.RLock()


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    """Send one message; a lock keeps a log record from another thread from interleaving."""
    with _SEND_LOCK:
        conn.send(msg)


class _PipeLogHandler(logging.Handler):
    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                msg += f" ({one_line_error(record.exc_info[1])})"
            _send(self.conn, ("log", record.levelno, record.name, msg))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def worker_main(conn: Connection, setup: WorkerSetup) -> None:
    """Entry point of a worker process (must stay a module-level function for spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger("framepipe")
    root.handlers[:] = [_PipeLogHandler(conn)]
    root.setLevel(setup.log_level)
    root.propagate = False
    for name in setup.imports:
        importlib.import_module(name)
    try:
        _send(conn, ("ready",))
        while True:
            msg = conn.recv()
            if msg[0] != "input":
                return
            if not _run_item(conn, setup, msg[1]):
                return
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the main process went away


def _run_item(conn: Connection, setup: WorkerSetup, work: WorkItem) -> bool:
    """Stream the clips of one input; False when the main process asked to stop."""
    skipped = 0

    def is_done(key: str) -> bool:
        nonlocal skipped
        if key in work.skip:
            return True
        if key in setup.done_keys:
            skipped += 1
            return True
        return False

    def on_clip(key: str, clip: ClipSpec) -> None:
        _send(conn, ("clip", key, clip))

    jobs = iter_clip_jobs(
        work.item,
        setup.cfg,
        extra_key=work.extra_key,
        is_done=is_done,
        on_clip=on_clip,
        read_frames=True,
    )
    for job in jobs:
        if setup.prepare is not None and job.ok:
            try:
                setup.prepare(job)
            except Exception as exc:  # one clip's failure never stops the run
                rec = job.record
                msg = one_line_error(exc)
                rec.status = "failed"
                rec.error = msg if rec.source in msg else f"{rec.source}: {msg}"
        packed = None
        if job.batch is not None:
            if setup.send_frames and job.ok:
                job.batch, packed = pack_frames(job.batch, use_shm=setup.use_shm)
            else:
                job.batch = None
        job.info = None  # metadata of the whole source: not needed by the consumer
        _send(conn, ("job", job, packed))
        reply = conn.recv()
        if reply[0] != "next":
            close = getattr(jobs, "close", None)
            if close is not None:
                close()
            return False
    _send(conn, ("end", skipped))
    return True
