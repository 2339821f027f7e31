"""The decoder process: the code that runs inside a child process of the decoder supervisor
(:mod:`framepipe.engine.supervisor`), for the local engine's workers and the Ray engine's read
actors alike.

The child talks to its supervisor over one duplex pipe. It receives an input, runs the read
stage (:func:`framepipe.read_clips.read_clips`) on it, and for every clip sends:

- ``("clip", key, clip)`` just before sampling and reading it (so that the supervisor knows
  which clip a hung or crashed decoder was on),
- ``("job", job, packed_frames)`` when the clip is read (and finished: e.g. its frames
  saved), then waits for ``("next",)``: that credit is how the supervisor's consumer bounds
  the number of decoded clips in memory,
- ``("end", skipped, plan)`` when the input has no more clips: how many were skipped as
  done, and its :class:`~framepipe.records.InputPlan` when it was read to its end (None
  else).

While a remote input downloads it sends ``("download", True)`` at the start and while bytes
arrive, ``("download", False)`` when the download is over: the supervisor does not count a
download that makes progress against the decode timeout. An error every input would hit
(:class:`~framepipe.errors.StopRunError`: no credentials for a store) is sent as
``("stop", message)``, and the process ends.

It says ``("ready",)`` once it has started. Log records are forwarded as
``("log", level, logger_name, message)``. It ignores Ctrl-C (the supervisor stops it) and
exits as soon as it finds the pipe closed, so it does not outlive a killed main process by
more than the clip it is on. A clip that cannot be sent (a plug-in's object that cannot be
pickled) is sent as a failed job (``stage: send``) instead.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import signal
import sys
import threading
import traceback
import types
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from framepipe import registry
from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.engine.base import Finish, Prepare
from framepipe.engine.transfer import PackedFrames, discard, pack_frames
from framepipe.errors import ConfigError, StopRunError, one_line_error
from framepipe.inputs.remote import RemoteStat
from framepipe.read_clips import read_clips
from framepipe.records import ClipJob, InputPlan, done_count
from framepipe.samplers.base import get_sampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSetup:
    """What every decoder process needs, sent once when it starts."""

    cfg: SampleConfig
    done: Collection[str] = frozenset()
    """What is skipped: done clips, and inputs whose clips are all done (see
    :func:`~framepipe.records.done_count`)."""
    finish: Finish | None = None
    prepare: Prepare | None = None
    """The answering backend's step for each clip's frames (see :func:`run_prepare`)."""
    send_frames: bool = True
    use_shm: bool = True
    imports: tuple[str, ...] = ()
    """Modules to import first (plug-ins: user samplers and source kinds registered there)."""
    log_level: int = logging.WARNING


class _FindMain(pickle.Pickler):
    """Pickles to nowhere, noting the first function or class defined in ``__main__``."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO())
        self.found: Any = None

    def reducer_override(self, obj: Any) -> Any:
        code = isinstance(obj, (type, types.FunctionType))
        if self.found is None and code and getattr(obj, "__module__", None) == "__main__":
            self.found = obj
        return NotImplemented


def check_sendable(setup: WorkerSetup) -> None:
    """ConfigError (one line) when the decoder processes could not get what ``setup``
    holds, before any starts: an object that cannot be pickled (a lambda sampler), or a
    function or class of ``__main__`` where spawned processes cannot import ``__main__``
    (a notebook, ``python -c``: a sampler defined in a cell). Each process would otherwise
    die at its start with a traceback of its own."""
    sampler = get_sampler(setup.cfg.sampler)[1]  # a name registered in __main__ too
    finder = _FindMain()
    try:
        finder.dump((sampler, replace(setup, done=frozenset())))  # the done keys are plain str
    except Exception as exc:
        raise ConfigError(
            f"the decoding worker processes cannot be sent what this run uses "
            f"({one_line_error(exc)}): define it with def in a module, or pass workers=0 to "
            "decode in this process"
        ) from None
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if finder.found is not None and (main_file is None or main_file.startswith("<")):
        name = getattr(finder.found, "__qualname__", repr(finder.found))
        raise ConfigError(
            f"{name} is defined in __main__ (a notebook or an interactive session), which the "
            "decoding worker processes cannot import: put it in a module and import it from "
            "there, or pass workers=0 to decode in this process"
        )


@dataclass(frozen=True)
class WorkItem:
    """One input for a decoder; ``skip`` holds clip keys not to read again after a restart;
    ``stat``: a remote input's metadata, when the supervisor read it (see
    :meth:`~framepipe.engine.supervisor.DecoderProcess.run`)."""

    task_id: int
    item: Input
    extra_key: dict[str, Any] = field(default_factory=dict)
    skip: frozenset[str] = frozenset()
    stat: RemoteStat | None = None


def plugin_modules() -> tuple[str, ...]:
    """Modules outside framepipe that registered a source kind or a sampler in this process.

    Decoder processes import them first, so a user's plug-ins work the same there.
    """
    from framepipe.samplers.base import available_samplers, get_sampler
    from framepipe.sources.base import source_kinds

    mods: list[str] = [cls.__module__ for cls in source_kinds().values()]
    for name in available_samplers():
        fn = get_sampler(name)[1]
        mods.append(getattr(fn, "__module__", None) or type(fn).__module__)
    out = []
    for m in mods:
        plugin = m and not m.startswith("framepipe.") and m not in ("__main__", "__mp_main__")
        if plugin and m not in out:
            out.append(m)
    return tuple(out)


def run_finish(finish: Finish | None, job: ClipJob) -> ClipJob:
    """Run ``finish`` on a clip read without error; an exception fails the clip (one clip's
    failure never stops the run)."""
    if finish is not None and job.error is None:
        try:
            finish(job)
        except Exception as exc:
            job.fail(exc)
    return job


def run_prepare(prepare: Prepare | None, job: ClipJob) -> ClipJob:
    """Make a read clip's frames into what the answering backend takes (their pixel values,
    their encoded images), here where the clip was read; the frames are then dropped. An
    exception fails the clip."""
    if prepare is not None and job.ok and job.batch is not None:
        try:
            job.prepared = prepare(job.batch.images())
        except Exception as exc:
            job.fail_unexpected(exc, "prepare")
        job.batch = None
    return job


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
                if logging.getLogger("framepipe").isEnabledFor(logging.DEBUG):
                    # the traceback does not cross the pipe as an object: send its text
                    msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            _send(self.conn, ("log", record.levelno, record.name, msg))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals for the main process alone: a decoder process starts with them blocked (see
``DecoderProcess.start``), so that one interrupted while it still imports (seconds, with
torch) prints no traceback over the terminal, and :func:`worker_main` ignores them."""


def worker_main(conn: Connection, setup: WorkerSetup) -> None:
    """Entry point of a decoder process (must stay a module-level function for spawn)."""
    # Ctrl-C and SIGTERM (sent to the whole process group by a terminal, or by a batch
    # scheduler to every process of a job) stop the run in the main process, which then
    # stops this one: a decoder that died of them first would fail an innocent clip. They
    # were held back since the process began (HELD_SIGNALS): ignored now, then let through.
    for sig in HELD_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    root = logging.getLogger("framepipe")
    root.handlers[:] = [_PipeLogHandler(conn)]
    root.setLevel(setup.log_level)
    root.propagate = False
    registry.in_worker()
    for name in setup.imports:
        importlib.import_module(name)
    try:
        _send(conn, ("ready",))
        while True:
            msg = conn.recv()
            if msg[0] != "input" or not _run_item(conn, setup, msg[1]):
                return
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the main process went away


def _run_item(conn: Connection, setup: WorkerSetup, work: WorkItem) -> bool:
    """Stream the clips of one input; False when the supervisor asked to stop."""
    skipped = 0
    plan: list[InputPlan] = []

    def is_done(key: str) -> bool:
        nonlocal skipped
        if key in work.skip:
            return True
        count = done_count(setup.done, key)
        skipped += count
        return count > 0

    def on_clip(key: str, clip: Any) -> None:
        _send(conn, ("clip", key, clip))

    def on_download(active: bool) -> None:
        _send(conn, ("download", active))

    jobs = read_clips(
        work.item,
        setup.cfg,
        extra_key=work.extra_key,
        is_done=is_done,
        on_clip=on_clip,
        on_plan=plan.append,
        on_download=on_download,
        stat=work.stat,
    )
    try:
        for job in jobs:
            _send_job(conn, setup, run_prepare(setup.prepare, run_finish(setup.finish, job)))
            if conn.recv()[0] != "next":
                return False
    except StopRunError as exc:
        _send(conn, ("stop", one_line_error(exc)))
        return False
    finally:
        jobs.close()
    _send(conn, ("end", skipped, plan[0] if plan else None))
    return True


def _send_job(conn: Connection, setup: WorkerSetup, job: ClipJob) -> None:
    """Pack the job's frames (or drop them) and send it; a job that cannot be sent is sent
    as a failed one."""
    packed: PackedFrames | None = None
    try:
        if job.batch is not None:
            if setup.send_frames:
                job.batch, packed = pack_frames(job.batch, use_shm=setup.use_shm)
            else:
                job.batch = None
        _send(conn, ("job", job, packed))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        raise  # the main process went away
    except Exception as exc:  # e.g. a plug-in's object that cannot be pickled
        if packed is not None:
            discard(packed)
        log.debug("%s: unexpected error sending a clip", job.source, exc_info=True)
        known = {k: v for k, v in job.fields.items() if k != "extra" and _picklable(v)}
        known["extra"] = {k: v for k, v in job.extra.items() if _picklable(v)}  # input_key, id
        _send(conn, ("job", ClipJob(job.source, known).fail(exc, stage="send"), None))


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True
