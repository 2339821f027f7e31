"""The code that runs inside a decoding worker process of the local engine.

A worker talks to the main process over one duplex pipe. It receives an input, runs
:func:`framepipe.stages.iter_clip_jobs` on it, and for every clip sends:

- ``("clip", key, clip)`` just before sampling and reading it (so that the main process
  knows which clip a hung or crashed decoder was on),
- ``("job", job, packed_frames)`` when the clip is read, then waits for ``("next",)``: that
  credit is how the main process bounds the number of decoded clips in memory,
- ``("end", skipped)`` when the input has no more clips.

A worker says ``("ready",)`` once it has started. Log records are forwarded as
``("log", level, logger_name, message)``. The worker ignores Ctrl-C (the main process
stops it) and exits as soon as it finds the pipe closed, so it does not outlive a killed
main process by more than the clip it is on.

An unexpected exception while reading or sending a clip (a bug in a plug-in, a library
error that the stage functions do not turn into a record) does not end the worker: the
clip becomes a ``failed`` job whose error is ``"<file>: <ExceptionType>: <message>"``, the
traceback is logged at DEBUG, and the worker goes on with the next clip
(:func:`guarded_clip_jobs`). Only a process that really dies (a segfault, ``os._exit``, a
kill) is left to the main process to notice and replace.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
import traceback
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from framepipe.config import SampleConfig
from framepipe.discover import Input
from framepipe.engine.transfer import PackedFrames, discard, pack_frames
from framepipe.errors import DecodeError, DecodeTimeoutError, captured_warnings, one_line_error
from framepipe.records import fail, failed_record, input_key, key_parts
from framepipe.stages import ClipJob, iter_clip_jobs, tag_record, whole_input_fingerprint
from framepipe.types import ClipResult, ClipSpec

log = logging.getLogger(__name__)

Prepare = Callable[[ClipJob], ClipResult | None]
"""A picklable function run on each decoded clip inside the worker (e.g. saving frames); it
returns the clip's record with what it added (e.g. the frames' paths), or None to keep it."""


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


def plugin_modules() -> tuple[str, ...]:
    """Modules outside framepipe that registered a source kind or a sampler in this process.

    Workers import them first, so a user's plug-ins work the same in a worker.
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


_SEND_LOCK = threading.RLock()


def start_worker(ctx: Any, setup: WorkerSetup) -> tuple[Any, Connection]:
    """Start one decoding worker process in the multiprocessing context ``ctx``: (process,
    the main process's end of its pipe)."""
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(
        target=worker_main, args=(child, setup), name="framepipe-decoder", daemon=True
    )
    proc.start()
    child.close()
    return proc, parent


class SkipCounter:
    """An engine's count of clips skipped as done; ``on_skip(count)`` sees each batch."""

    skipped: int
    on_skip: Callable[[int], None] | None

    def _count_skips(self, count: int) -> None:
        if count:
            self.skipped += count
            if self.on_skip is not None:
                self.on_skip(count)


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

    jobs = guarded_clip_jobs(
        work.item, setup.cfg, extra_key=work.extra_key, is_done=is_done, on_clip=on_clip
    )
    try:
        for job in jobs:
            _send_job(conn, setup, job)
            reply = conn.recv()
            if reply[0] != "next":
                return False
    finally:
        jobs.close()
    _send(conn, ("end", skipped))
    return True


def _send_job(conn: Connection, setup: WorkerSetup, job: ClipJob) -> None:
    """Prepare ``job`` (e.g. save its frames), pack its frames and send it; an unexpected
    exception on the way sends a failed record of the clip instead."""
    packed: PackedFrames | None = None
    try:
        if setup.prepare is not None and job.ok:
            run_prepare(setup.prepare, job)
        if job.batch is not None:
            if setup.send_frames and job.ok:
                job.batch, packed = pack_frames(job.batch, use_shm=setup.use_shm)
            else:
                job.batch = None
        job.info = None  # metadata of the whole source: not needed by the consumer
        _send(conn, ("job", job, packed))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        raise  # the main process went away
    except Exception as exc:  # e.g. a plug-in's object that cannot be pickled
        if packed is not None:
            discard(packed)
        rec = job.record
        log.debug("%s: unexpected error sending a clip", rec.source, exc_info=True)
        failed = failed_record(
            rec.source, exc, kind=rec.kind, clip=rec.clip, key=rec.key, extra={"stage": "send"}
        )
        _send(conn, ("job", ClipJob(failed), None))


def run_prepare(prepare: Prepare, job: ClipJob) -> None:
    """Run ``prepare`` on a decoded clip and keep the record it returns; an exception fails
    the clip (one clip's failure never stops the run)."""
    try:
        rec = prepare(job)
    except Exception as exc:
        job.record = fail(job.record, exc)
    else:
        if rec is not None:
            job.record = rec


def guarded_clip_jobs(
    item: Input,
    cfg: SampleConfig,
    *,
    extra_key: dict[str, Any] | None = None,
    is_done: Callable[[str], bool] | None = None,
    on_clip: Callable[[str, ClipSpec], None] | None = None,
) -> Generator[ClipJob, None, None]:
    """:func:`~framepipe.stages.iter_clip_jobs` (reading frames) where an unexpected
    exception escaping it becomes a ``failed`` job instead of ending the caller.

    An exception while a clip is being read fails that clip (error
    ``"<file>: <ExceptionType>: <message>"``), then the input is opened again and the
    clips after it are read (those already yielded, failed or done are not read twice).
    An exception outside any clip (planning, closing the source) fails the input as a
    whole, as an input that cannot be opened does. The traceback is logged at DEBUG.
    """
    extra = dict(extra_key or {})
    handled: set[str] = set()  # keys yielded, failed, or skipped as done
    src_id = item.source

    def done(key: str) -> bool:
        if key in handled:
            return True
        if is_done is not None and is_done(key):
            handled.add(key)  # counted once, not again when the input is reopened
            return True
        return False

    current: list[tuple[str, ClipSpec]] = []  # the clip being read, if any

    def started(key: str, clip: ClipSpec) -> None:
        current[:] = [(key, clip)]
        handled.add(key)
        if on_clip is not None:
            on_clip(key, clip)

    while True:
        current.clear()
        jobs = iter_clip_jobs(
            item, cfg, extra_key=extra, is_done=done, on_clip=started, read_frames=True
        )
        try:
            while True:
                try:
                    with captured_warnings(src_id):  # logged at DEBUG, not printed
                        job = next(jobs)
                except StopIteration:
                    return
                except Exception as exc:
                    error = exc
                    break
                current.clear()
                if job.record.key:
                    handled.add(job.record.key)
                yield job
        finally:
            _close(jobs)
        log.debug("%s: unexpected error reading the input", src_id, exc_info=error)
        if not current:
            stage = "input" if handled else "open"
            key = input_error_key(item, cfg, extra)
            rec = failed_record(src_id, error, kind=item.kind, key=key, extra={"stage": stage})
            yield ClipJob(tag_record(rec, item))
            return
        key, clip = current[0]
        fields = {"stage": "decode", "input_key": input_error_key(item, cfg, extra)}
        rec = failed_record(
            src_id, error, kind=item.kind, clip=clip.to_json(), key=key, extra=fields
        )
        yield ClipJob(tag_record(rec, item))  # then read the rest of the input again


def input_error_key(item: Input, cfg: SampleConfig, extra_key: dict[str, Any]) -> str:
    """The resume key of a record that fails a whole input (as the stages make it)."""
    try:
        parts = key_parts(cfg, extra_key)
    except Exception:  # the settings themselves may be what failed
        parts = dict(extra_key)
    return input_key(whole_input_fingerprint(item, cfg), parts)


def lost_clip(
    work: WorkItem,
    clip: tuple[str, ClipSpec] | None,
    seen: Collection[str],
    reason: str,
    cfg: SampleConfig,
) -> tuple[list[ClipResult], WorkItem | None]:
    """What a decoder that hung or died on ``work`` leaves: the failed record of the clip it
    was on (``clip``: key and range; or of the whole input when it never got to a clip), and
    the rest of the input to read again with a fresh decoder (``seen``: clip keys it had
    started, not read again), or None. ``reason`` starts with "did not finish" for a timeout.
    """
    item = work.item
    timed_out = reason.startswith("did not finish")
    err_cls = DecodeTimeoutError if timed_out else DecodeError
    what = "the decoder " + reason + ("; it was stopped" if timed_out else "")
    err = err_cls(item.source, what)
    log.warning("%s", err)
    src = item.source
    if clip is not None:  # the clip it was on fails
        key, spec = clip
        clip_json = spec.to_json()
        stage = {"stage": "decode", "input_key": input_error_key(item, cfg, work.extra_key)}
        rec = failed_record(src, err, kind=item.kind, clip=clip_json, key=key, extra=stage)
        rest = WorkItem(work.task_id, item, work.extra_key, work.skip | frozenset(seen))
        return [tag_record(rec, item)], rest
    if seen:  # died between clips: nothing failed that we know of
        return [], WorkItem(work.task_id, item, work.extra_key, work.skip | frozenset(seen))
    if work.skip:
        # reading the rest again after a lost clip, it hung or died opening the input: the
        # lost clip's record already fails this input (a second, input-level record would
        # be one more record than the input has clips); its later clips, if any, are left
        # to a re-run, which retries what failed
        log.warning("%s: not read past the clip that failed (a re-run retries)", src)
        return [], None
    # it never got to a clip: opening or planning the input hung or crashed
    key = input_error_key(item, cfg, work.extra_key)
    rec = failed_record(src, err, kind=item.kind, key=key, extra={"stage": "open"})
    return [tag_record(rec, item)], None


def _close(it: Iterator[Any]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()
