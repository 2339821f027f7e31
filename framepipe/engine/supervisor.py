"""The decoder supervisor: one decoder child process (:mod:`framepipe.engine.worker`), watched.

:class:`DecoderProcess` sends its child one input at a time and yields the clips it reads.
A child that takes longer than ``decode_timeout_s`` on one clip, or that dies (a segfault in
a decoder, ``os._exit`` in a plug-in), is killed: the clip it was on becomes a failed record
(:func:`lost_clip`) and the rest of its input is read by a fresh child, skipping the clips
already delivered and the one that failed. A child that dies while starting up is not the
input's fault: the input is handed to a new child, and after three such starts in a row the
run stops with one line. A remote input's download is not decoding: while the child says it
downloads, the limit is the configured stall time since bytes last arrived
(``SampleConfig.download_stall_s``, which the child enforces itself; this is the backstop);
the decode timeout starts when the download is over. An error every input would hit (the
child's ``("stop", message)``) raises :class:`~framepipe.errors.StopRunError`. This is the
second error boundary of a run (the first is the read
stage, :mod:`framepipe.read_clips`); nothing in between catches.

Both engines use it: the local engine runs one per worker thread, the Ray engine one per read
actor (Ray Data has no per-task timeout and retries a dead worker's task forever, so
decoding never runs in the actor itself).

Why not a process pool library (pebble's ``ProcessPool`` has per-task timeouts and turns a
crash into an error)? A task there is one function call whose result comes back whole; a
clip here is one of several yielded by an input that stays open between them, with its
frames in shared memory and a credit per clip to bound what is decoded ahead. A pool would
reopen the input for every clip (a video's index is built once per open) or lose the
bounded streaming.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import signal
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from multiprocessing import resource_tracker
from multiprocessing.connection import wait
from typing import Any

from framepipe.config import SampleConfig
from framepipe.engine.transfer import PackedFrames, unpack_frames
from framepipe.engine.worker import HELD_SIGNALS, WorkerSetup, WorkItem, worker_main
from framepipe.errors import (
    ConfigError,
    DecodeError,
    DecodeTimeoutError,
    FramepipeError,
    SourceError,
    StopRunError,
)
from framepipe.inputs.remote import stat_within
from framepipe.read_clips import input_failure_key, skipped_unopened, tagged
from framepipe.records import ClipJob, InputPlan
from framepipe.types import ClipSpec

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0
"""How long a new decoder process may take to start (import its modules) and say so."""

MAX_FAILED_STARTS = 3
"""Decoder processes that may die in a row while starting before the run stops."""

STALL_GRACE_S = 10.0
"""How long past the stall time a downloading child that stopped answering is given (it
stops a stalled download itself) before it is stopped."""

STALLED = "download stalled"

SCRIPT_RERUN_EXIT = 87
"""The exit status of a decoder process whose start ran the caller's script again up to a
run (spawn imports the main script in every new process): see :func:`exit_if_starting`."""

UNGUARDED_SCRIPT = (
    "decoding worker processes are started with spawn, which runs the calling script again "
    "in each of them: put the code that runs framepipe under "
    '`if __name__ == "__main__":` (or pass workers=0 to decode in this process)'
)


def exit_if_starting() -> None:
    """In a process that is still starting (spawn runs the parent's main script in it
    first), a run is that script's unguarded code, which would start processes of its own
    and fail with a traceback per process: end this one quietly instead, with
    :data:`SCRIPT_RERUN_EXIT`, which the parent reports as one line
    (:data:`UNGUARDED_SCRIPT`)."""
    # multiprocessing's own flag for "still starting", the one its bootstrapping check reads
    if getattr(mp.current_process(), "_inheriting", False):
        raise SystemExit(SCRIPT_RERUN_EXIT)


@dataclass(frozen=True)
class Skipped:
    """The end of an input: how many of its clips were skipped as done, and its plan when
    it was read to its end (for the run's ledger)."""

    count: int
    plan: InputPlan | None = None


class DecoderProcess:
    """One decoder child process, driven over the worker protocol; replaced when lost.

    :meth:`run` yields the clips of one input as they are read; the child reads the next
    one only once the consumer asks for it (a credit per clip). :meth:`close` (from any
    thread) kills the child and makes a running :meth:`run` return.
    """

    def __init__(
        self,
        setup: WorkerSetup,
        decode_timeout_s: float | None,
        start_method: str = "spawn",
    ) -> None:
        self.setup = setup
        self.decode_timeout_s = decode_timeout_s
        self._ctx: Any = mp.get_context(start_method)  # a process with torch must not fork
        self._proc: Any = None
        self._conn: Any = None
        self._ready = False
        self._closed = False
        self._running = False
        self.restarts = 0
        """Children replaced after a crash or a hang (not counting failed starts)."""
        self.starts = 0
        """Children started (the first with the first input that needs reading)."""

    def start(self) -> None:
        """Start a child now (it imports its modules while the caller does other work)."""
        exit_if_starting()
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, args=(child, self.setup), name="framepipe-decoder", daemon=True
        )
        # the child inherits this thread's mask: Ctrl-C and SIGTERM wait in it until
        # worker_main ignores them; here they wait until the child is started. The resource
        # tracker starts first: starting it unblocks them (multiprocessing.resource_tracker)
        if self._ctx.get_start_method() != "fork":
            resource_tracker.ensure_running()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        try:
            proc.start()
        except BaseException:  # no process to stop later: only the pipe to close
            parent.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            child.close()
        self._proc, self._conn, self._ready = proc, parent, False
        self.starts += 1
        # a child still running when the interpreter exits (a run's generator never closed:
        # a loop left with ``break`` while a variable holds it) is stopped first: Python
        # then joins its processes after a SIGTERM, which a decoder ignores (HELD_SIGNALS)
        atexit.register(self.close)

    @property
    def process(self) -> Any:
        """The child process now (None between children)."""
        return self._proc

    def close(self) -> None:
        """Kill the child (safe to call twice, and from another thread: a running
        :meth:`run` then returns and cleans up)."""
        self._closed = True
        proc = self._proc
        if not self._running:
            self._stop()
        elif proc is not None and proc.is_alive():
            proc.kill()

    def _stop(self) -> None:
        atexit.unregister(self.close)
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            _drain(conn)
            conn.close()
        if proc is not None:
            stop_process(proc)

    def _deadline(self) -> float | None:
        t = self.decode_timeout_s
        if t is not None and not self._ready:  # starting a process is not decoding
            t = max(t, STARTUP_TIMEOUT_S)
        return None if t is None else time.monotonic() + t

    def _stall_deadline(self) -> float:
        return time.monotonic() + self.setup.cfg.download_stall_s + STALL_GRACE_S

    def run(self, work: WorkItem) -> Iterator[ClipJob | Skipped]:
        """The clips of ``work`` (ok or failed) as they are read, then its :class:`Skipped`
        count. An input the resume skips whole (its plan in the ledger) is skipped here,
        without a child: a run with nothing left to read starts none. For a remote input
        that takes its metadata (one request, here, within
        :data:`~framepipe.inputs.remote.METADATA_TIMEOUT_S`; the child is handed it, and
        without it, the child asks itself and its record says what went wrong). Raises
        FramepipeError when decoder processes keep dying at start."""
        item, cfg = work.item, self.setup.cfg
        if item.uri and not item.error and self.setup.done and work.stat is None:
            work = replace(work, stat=stat_within(item.uri, cfg.storage_options))
        done = skipped_unopened(item, cfg, work.extra_key, self.setup.done, work.stat)
        if done:
            yield Skipped(done)
            return
        self._running = True
        try:
            yield from self._run(work)
        finally:
            self._running = False
            if self._closed:
                self._stop()

    def _run(self, work: WorkItem) -> Iterator[ClipJob | Skipped]:
        pending = [work]
        skipped = 0
        plan: InputPlan | None = None
        failed_starts = 0
        while pending and not self._closed:
            item = pending.pop()
            if self._proc is None or not self._proc.is_alive():
                self._stop()
                self.start()
            lost: str | None = None
            downloading = False
            clip: tuple[str, ClipSpec] | None = None
            seen: set[str] = set()
            try:
                self._conn.send(("input", item))
            except OSError:
                lost = died_reason(self._proc)
            deadline = self._deadline()
            while lost is None:
                conn, proc = self._conn, self._proc
                if conn is None or self._closed:
                    return
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    ready = wait([conn, proc.sentinel], timeout=timeout)
                except (OSError, ValueError):  # closed under us
                    if self._closed:
                        return
                    raise
                if conn in ready or conn.poll():
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):
                        lost = died_reason(proc)
                        break
                    kind = msg[0]
                    if kind == "ready":
                        self._ready, failed_starts = True, 0
                    elif kind == "log":
                        logging.getLogger(msg[2]).log(msg[1], "%s", msg[3])
                        continue  # not progress: the deadline stays
                    elif kind == "clip":
                        clip = (msg[1], msg[2])
                        seen.add(msg[1])
                    elif kind == "job":
                        job: ClipJob = msg[1]
                        packed: PackedFrames | None = msg[2]
                        if job.batch is not None and packed is not None:
                            job.batch = unpack_frames(job.batch, packed)
                        clip = None
                        if job.key:
                            seen.add(job.key)
                        yield job  # the consumer takes it: then the child may go on
                        if self._closed:
                            return
                        try:
                            conn.send(("next",))
                        except OSError:
                            lost = died_reason(proc)
                            break
                    elif kind == "end":
                        skipped += int(msg[1])
                        plan = msg[2]
                        break
                    elif kind == "download":
                        downloading = bool(msg[1])
                    elif kind == "stop":  # an error every input would hit; the child
                        self._stop()  # ends: the next input (a Ray actor's) gets another
                        raise StopRunError(msg[1])
                    else:  # pragma: no cover - protocol bug
                        raise RuntimeError(f"unknown message from a decoder: {kind!r}")
                    deadline = self._stall_deadline() if downloading else self._deadline()
                elif proc.sentinel in ready or not proc.is_alive():
                    lost = died_reason(proc)
                elif downloading and deadline is not None and time.monotonic() > deadline:
                    lost = f"{STALLED} (no data for {self.setup.cfg.download_stall_s:g} s)"
                elif deadline is not None and time.monotonic() > deadline:
                    lost = f"did not finish within {self.decode_timeout_s:g} s"
            if lost is None or self._closed:
                continue
            was_ready = self._ready
            code = self._proc.exitcode if self._proc is not None else None
            self._stop()
            if not was_ready and code == SCRIPT_RERUN_EXIT:
                raise ConfigError(UNGUARDED_SCRIPT)
            if not was_ready:  # it died starting up: not the input's fault
                failed_starts += 1
                if failed_starts >= MAX_FAILED_STARTS:
                    raise FramepipeError(f"decoder processes die at start (the {lost}); see above")
                log.warning("a decoder process did not start (the %s); starting another", lost)
                pending.append(item)
                continue
            self.restarts += 1
            jobs, rest = lost_clip(item, clip, seen, lost, self.setup.cfg)
            yield from jobs
            if rest is not None:
                pending.append(rest)
        yield Skipped(skipped, plan)


def lost_clip(
    work: WorkItem,
    clip: tuple[str, ClipSpec] | None,
    seen: Collection[str],
    reason: str,
    cfg: SampleConfig,
) -> tuple[list[ClipJob], WorkItem | None]:
    """What a decoder that hung or died on ``work`` leaves: the failed job of the clip it was
    on (``clip``: key and range; or of the whole input when it never got to a clip), and
    the rest of the input to read again with a fresh decoder (``seen``: clip keys it had
    started, not read again), or None. ``reason`` starts with "did not finish" for a timeout.
    """
    item = work.item
    timed_out = reason.startswith("did not finish")
    err_cls = DecodeTimeoutError if timed_out else DecodeError
    err: SourceError = err_cls(
        item.source, "the decoder " + reason + ("; it was stopped" if timed_out else "")
    )
    if reason.startswith(STALLED):  # the input's own failure, as the child would say it
        err = SourceError(item.source, reason)
    else:
        log.warning("%s", err)
    rest = replace(work, skip=work.skip | frozenset(seen))
    whole = input_failure_key(item, cfg, work.extra_key)
    if clip is not None:  # the clip it was on fails
        key, spec = clip
        known = {"kind": item.kind, "clip": spec.to_json(), "key": key}
        job = ClipJob(item.source, {**known, "extra": {"input_key": whole}})
        return [tagged(job.fail(err, stage="decode"), item)], rest
    if seen:  # died between clips: nothing failed that we know of
        return [], rest
    if work.skip:
        # reading the rest again after a lost clip, it hung or died opening the input: the
        # lost clip's record already fails this input (a second, input-level record would
        # be one more record than the input has clips); its later clips, if any, are left
        # to a re-run, which retries what failed
        log.warning("%s: not read past the clip that failed (a re-run retries)", item.source)
        return [], None
    # it never got to a clip: opening or planning the input hung or crashed
    job = ClipJob(item.source, {"kind": item.kind, "key": whole})
    return [tagged(job.fail(err, stage="open"), item)], None


def died_reason(proc: Any) -> str:
    """Why the process ``proc`` is gone (or ``stopped answering``)."""
    proc.join(timeout=1.0)
    code = proc.exitcode
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"process died ({name})"
    return f"process exited with status {code}"


def stop_process(proc: Any) -> None:
    if proc.is_alive():
        proc.kill()
    proc.join(timeout=5)


def _drain(conn: Any) -> None:
    """Free the shared memory of frames a child sent that nobody will read."""
    from framepipe.engine.transfer import discard

    try:
        while conn.poll():
            msg = conn.recv()
            if msg[0] == "job" and msg[2] is not None:
                discard(msg[2])
    except (EOFError, OSError):
        pass
