"""The local engine: decode clips in worker processes while the caller uses the frames.

:class:`LocalEngine` hands inputs to a small pool of worker processes (``spawn`` context:
a process that has loaded torch must not ``fork``). Each worker runs the ordinary stage
functions (:func:`framepipe.stages.iter_clip_jobs`) and ships every decoded clip back
through shared memory. A thread of the calling process receives them into a *bounded*
queue of ``prefetch`` clips, so decoding runs ahead of the model by at most that much,
while the caller's thread is busy generating.

An unexpected exception while a clip is read (a bug in a plug-in, a library error) fails
that clip only, in the worker, which goes on with the next clip (see
:mod:`framepipe.engine.worker`). A worker that does not finish a clip within
``decode_timeout_s``, or that dies (a segfault in a decoder, ``os._exit`` in a plug-in), is
killed; the clip it was on becomes a ``failed`` record, and the rest of that input is read
again by a fresh worker (skipping the clips already delivered and the one that failed).
Nothing about one input stops the others.

``workers=0`` runs everything in the calling thread: no overlap and no timeout, but easy to
debug; an unexpected exception becomes a failed clip there too.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from framepipe.config import SampleConfig
from framepipe.discover import Input
from framepipe.engine.transfer import PackedFrames, discard, unpack_frames
from framepipe.engine.worker import (
    Prepare,
    SkipCounter,
    WorkerSetup,
    WorkItem,
    guarded_clip_jobs,
    lost_clip,
    plugin_modules,
    run_prepare,
    start_worker,
)
from framepipe.errors import ConfigError, FramepipeError
from framepipe.stages import ClipJob
from framepipe.types import ClipSpec
from framepipe.utils import Closing

log = logging.getLogger(__name__)

DEFAULT_DECODE_TIMEOUT_S = 300.0
"""How long one clip (open, sample and read) may take before its decoder is stopped."""

STARTUP_TIMEOUT_S = 60.0
"""How long a new worker process may take to start (import its modules) and say so."""


@dataclass(frozen=True)
class EngineTask:
    """One input to read, and what joins its clips' resume keys (model, questions ...)."""

    item: Input
    extra_key: dict[str, Any] = field(default_factory=dict)


def default_workers() -> int:
    """Decoding processes by default: two, or one on a single-core machine."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    work: WorkItem | None = None
    clip: tuple[str, ClipSpec] | None = None
    seen: set[str] = field(default_factory=set)
    deadline: float | None = None
    ready: bool = False
    """Whether it has started (imported its modules) and said so."""


class _End:
    pass


@dataclass(frozen=True)
class _Skipped:
    count: int


class LocalEngine(SkipCounter, Closing):
    """Read clips with ``workers`` processes, ``prefetch`` decoded clips ahead of the caller.

    Use :meth:`run` once (or :meth:`start`, then :meth:`results`): it yields a
    :class:`~framepipe.stages.ClipJob` per clip not yet done (``done_keys``), ok or failed,
    in the order they finish. ``prepare`` (a picklable function) runs on each decoded clip
    inside the worker, e.g. to save its frames; ``send_frames=False`` then drops the frames
    instead of shipping them (``job.batch`` is None). ``skipped`` counts clips left out
    because their key was in ``done_keys`` (``on_skip(count)`` is called in the caller's
    thread as they are found). ``job.info`` is not sent back from workers.
    """

    def __init__(
        self,
        cfg: SampleConfig,
        *,
        workers: int | None = None,
        prefetch: int | None = None,
        decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
        done_keys: Collection[str] = (),
        prepare: Prepare | None = None,
        send_frames: bool = True,
        use_shm: bool = True,
        imports: Sequence[str] = (),
        start_method: str = "spawn",
        on_skip: Callable[[int], None] | None = None,
    ) -> None:
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise ConfigError(f"workers ({self.workers}) must be >= 0")
        self.prefetch = max(1, 2 * self.workers) if prefetch is None else int(prefetch)
        if self.prefetch < 1:
            raise ConfigError(f"prefetch ({self.prefetch}) must be >= 1")
        if decode_timeout_s is not None and not decode_timeout_s > 0:
            raise ConfigError(f"decode timeout ({decode_timeout_s}) must be > 0 seconds")
        self.decode_timeout_s = decode_timeout_s
        self.cfg = cfg
        self.done_keys = frozenset(done_keys)
        self.prepare = prepare
        self.send_frames = send_frames
        self.use_shm = use_shm
        self.imports = tuple(dict.fromkeys([*plugin_modules(), *imports]))
        self.start_method = start_method
        self.on_skip = on_skip
        self.skipped = 0
        self.restarts = 0
        self._stop = threading.Event()
        self._out: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        self._thread: threading.Thread | None = None
        self._pool: list[_Worker | None] = []
        self._started = False
        self._tasks: Iterable[EngineTask] = ()

    # -- the caller's side ------------------------------------------------------------------
    def start(self, tasks: Iterable[EngineTask]) -> None:
        """Start the workers on ``tasks``: they decode up to ``prefetch`` clips ahead even
        before :meth:`results` is read (e.g. while a model loads). ``tasks`` may be an
        iterator (a streamed manifest): it is read as workers become free, never listed."""
        if self._started:
            raise RuntimeError("a LocalEngine runs once")
        self._started = True
        self._tasks = tasks
        if self.workers > 0:
            self._start(iter(tasks))

    def results(self) -> Iterator[ClipJob]:
        """Yield the clips of the started tasks as they are read; closes the engine at the
        end (or when the caller stops early)."""
        if not self._started:
            raise RuntimeError("start() the engine first")
        if self.workers == 0:
            yield from self._run_inline(self._tasks)
            return
        try:
            while True:
                try:
                    item = self._out.get(timeout=0.5)
                except queue.Empty:
                    if self._thread is not None and not self._thread.is_alive():
                        raise RuntimeError("the engine's receiver thread stopped") from None
                    continue
                if isinstance(item, _End):
                    return
                if isinstance(item, _Skipped):
                    self._count_skips(item.count)
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def run(self, tasks: Iterable[EngineTask]) -> Iterator[ClipJob]:
        """:meth:`start` then :meth:`results`: the clips of ``tasks`` as they are read."""
        self.start(tasks)
        return self.results()

    def _run_inline(self, tasks: Iterable[EngineTask]) -> Iterator[ClipJob]:
        def is_done(key: str) -> bool:
            if key in self.done_keys:
                self._count_skips(1)
                return True
            return False

        for task in tasks:
            jobs = guarded_clip_jobs(task.item, self.cfg, extra_key=task.extra_key, is_done=is_done)
            for job in jobs:
                if self.prepare is not None and job.ok:
                    run_prepare(self.prepare, job)
                if not self.send_frames:
                    job.batch = None
                yield job

    def close(self) -> None:
        """Stop the workers and the receiver thread (safe to call twice)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)  # it checks the stop flag at least twice a second
        for w in self._pool:
            if w is not None:
                self._drain_and_discard(w)
                _stop_process(w.proc)
                w.conn.close()
        self._pool = [None] * len(self._pool)

    # -- the receiver thread ------------------------------------------------------------------
    def _start(self, tasks: Iterator[EngineTask]) -> None:
        self._pending = _Pending(
            WorkItem(k, t.item, dict(t.extra_key)) for k, t in enumerate(tasks)
        )
        self._ctx: Any = mp.get_context(self.start_method)
        self._setup = WorkerSetup(
            cfg=self.cfg,
            done_keys=self.done_keys,
            prepare=self.prepare,
            send_frames=self.send_frames,
            use_shm=self.use_shm,
            imports=self.imports,
            log_level=logging.getLogger("framepipe").getEffectiveLevel(),
        )
        self._pool = [None] * max(1, self.workers)  # started as inputs come (_assign)
        self._spawn_failures = 0
        self._thread = threading.Thread(target=self._serve, name="framepipe-engine", daemon=True)
        self._thread.start()

    def _spawn(self) -> _Worker:
        return _Worker(*start_worker(self._ctx, self._setup))

    def _serve(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # hand any bug to the caller's thread
            if not self._stop.is_set():
                log.debug("engine thread failed", exc_info=True)
                self._put(exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._assign()
            busy = [w for w in self._pool if w is not None and w.work is not None]
            if not busy and not self._pending:
                self._put(_End())
                return
            now = time.monotonic()
            deadlines = [w.deadline for w in busy if w.deadline is not None]
            timeout = 0.5 if not deadlines else max(0.0, min(0.5, min(deadlines) - now))
            objs: list[Any] = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            ready = set(wait(objs, timeout=timeout))
            for w in busy:
                if self._stop.is_set():
                    return
                if w.conn in ready:
                    self._receive(w)
                    if w.work is None:  # finished its input, or lost
                        continue
                if w.conn.poll():
                    continue  # more to read first
                if w.proc.sentinel in ready or not w.proc.is_alive():
                    self._lost(w, _died_reason(w.proc))
                elif w.deadline is not None and time.monotonic() > w.deadline:
                    self._lost(w, f"did not finish within {self.decode_timeout_s:g} s")

    def _assign(self) -> None:
        for k, w in enumerate(self._pool):
            if not self._pending:
                return
            if w is not None and w.work is not None:
                continue
            if w is not None and not w.proc.is_alive():  # died while idle
                _stop_process(w.proc)
                w.conn.close()
                w = None
            if w is None:
                w = self._pool[k] = self._spawn()
            work = self._pending.popleft()
            w.work, w.clip, w.seen = work, None, set()
            self._arm(w)
            try:
                w.conn.send(("input", work))
            except OSError:
                self._lost(w, _died_reason(w.proc))

    def _arm(self, w: _Worker) -> None:
        t = self.decode_timeout_s
        if t is not None and not w.ready:  # starting a process is not decoding: more time
            t = max(t, STARTUP_TIMEOUT_S)
        w.deadline = None if t is None else time.monotonic() + t

    def _receive(self, w: _Worker) -> None:
        """Handle every message waiting from ``w``."""
        try:
            while w.work is not None and w.conn.poll():
                msg = w.conn.recv()
                self._handle(w, msg)
        except (EOFError, OSError):
            self._lost(w, _died_reason(w.proc))

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ready":
            w.ready = True
            self._spawn_failures = 0
            self._arm(w)
        elif kind == "log":
            _, level, name, text = msg
            logging.getLogger(name).log(level, "%s", text)
        elif kind == "clip":
            w.clip = (msg[1], msg[2])
            w.seen.add(msg[1])
            self._arm(w)
        elif kind == "job":
            job: ClipJob = msg[1]
            packed: PackedFrames | None = msg[2]
            if job.batch is not None and packed is not None:
                job.batch = unpack_frames(job.batch, packed)
            w.clip = None
            if job.record.key:
                w.seen.add(job.record.key)
            w.deadline = None  # waiting for our credit, not working
            if self._put(job):
                w.conn.send(("next",))
                self._arm(w)
        elif kind == "end":
            self._put(_Skipped(int(msg[1])))
            w.work, w.clip, w.deadline = None, None, None
        else:  # pragma: no cover - protocol bug
            raise RuntimeError(f"unknown message from a decoder: {kind!r}")

    def _lost(self, w: _Worker, reason: str) -> None:
        """``w`` hung or died: record its clip as failed, requeue the rest of its input."""
        _stop_process(w.proc)
        w.conn.close()
        k = self._pool.index(w)
        self._pool[k] = None
        work, w.work = w.work, None
        if work is None or self._stop.is_set():
            return
        if not w.ready:  # it died starting up: not the input's fault
            log.warning("a decoder process did not start (the %s); starting another", reason)
            self._pending.appendleft(work)
            self._spawn_failures += 1
            if self._spawn_failures >= 3:
                raise FramepipeError(f"decoder processes die at start (the {reason}); see above")
            return
        self.restarts += 1
        recs, rest = lost_clip(work, w.clip, w.seen, reason, self.cfg)
        for rec in recs:
            self._put(ClipJob(rec))
        if rest is not None:  # the rest of the input (if any) goes to a fresh worker
            self._pending.appendleft(rest)

    def _put(self, item: Any) -> bool:
        """Put ``item`` in the bounded queue, waiting for room; False when stopping."""
        while not self._stop.is_set():
            try:
                self._out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _drain_and_discard(self, w: _Worker) -> None:
        """Free the shared memory of frames a worker sent that nobody will read."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "job" and msg[2] is not None:
                    discard(msg[2])
        except (EOFError, OSError):
            pass


class _Pending:
    """Work not handed out: inputs put back (first), then the tasks' iterator, lazily."""

    def __init__(self, items: Iterator[WorkItem]) -> None:
        self._back: collections.deque[WorkItem] = collections.deque()
        self._items = items

    def __bool__(self) -> bool:
        if self._back:
            return True
        nxt = next(self._items, None)
        if nxt is None:
            return False
        self._back.append(nxt)
        return True

    def appendleft(self, item: WorkItem) -> None:
        self._back.appendleft(item)

    def popleft(self) -> WorkItem:
        if not self:
            raise IndexError("no pending work")
        return self._back.popleft()


def _died_reason(proc: Any) -> str:
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


def _stop_process(proc: Any) -> None:
    if proc.is_alive():
        proc.kill()
    proc.join(timeout=5)
