"""The local engine: decode clips in worker processes while this process answers them.

:class:`LocalEngine` runs one thread per worker, each with its decoder process
(:class:`~framepipe.engine.supervisor.DecoderProcess`: a crash or a hang past the decode
timeout becomes a failed record, the rest of the input goes to a fresh process). Decoded
clips come back through shared memory into a *bounded* queue of ``prefetch`` clips, so
decoding runs ahead of the model by at most that much while the caller's thread answers
(:class:`~framepipe.answering.Answering`, for ``caption``) and builds the records.

``workers=0`` reads everything in the calling thread: no overlap and no timeout, but easy
to debug; an unexpected exception is a failed clip there too (the read stage's boundary).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from framepipe.answering import Answering
from framepipe.engine.base import (
    ENGINES,
    FRESH,
    EngineBase,
    EngineOptions,
    EngineTask,
    Resume,
    Work,
    default_workers,
)
from framepipe.engine.supervisor import DecoderProcess, Skipped, exit_if_starting
from framepipe.engine.worker import (
    WorkerSetup,
    WorkItem,
    check_sendable,
    plugin_modules,
    run_finish,
    run_prepare,
)
from framepipe.errors import ConfigError
from framepipe.read_clips import read_clips
from framepipe.records import ClipJob, done_count
from framepipe.types import ClipResult
from framepipe.utils import Closing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _End:
    """A worker thread is done."""


class LocalEngine(EngineBase, Closing):
    """Read clips with ``workers`` processes, ``prefetch`` decoded clips ahead of the caller.

    :meth:`run` yields every clip's record; :meth:`jobs` the decoded clips themselves (their
    frames, when the work answers them). Use one engine for one run.
    """

    def __init__(
        self,
        workers: int | None = None,
        prefetch: int | None = None,
        *,
        on_skip: Callable[[int], None] | None = None,
        use_shm: bool = True,
        imports: Sequence[str] = (),
        start_method: str = "spawn",
    ) -> None:
        super().__init__(on_skip)
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise ConfigError(f"workers ({self.workers}) must be >= 0")
        if self.workers > 0:  # before the run that made it touches its output
            exit_if_starting()
        if prefetch is not None and int(prefetch) < 1:
            raise ConfigError(f"prefetch ({prefetch}) must be >= 1")
        self.prefetch = prefetch
        self.use_shm = use_shm
        self.imports = tuple(dict.fromkeys([*plugin_modules(), *imports]))
        self.start_method = start_method
        self.decoders: list[DecoderProcess] = []
        """One per worker, once started."""
        self._stop = threading.Event()
        self._out: queue.Queue[Any] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._started = False

    @classmethod
    def from_options(cls, options: EngineOptions) -> LocalEngine:
        return cls(options.workers, options.prefetch, on_skip=options.on_skip)

    # -- the caller's side ------------------------------------------------------------------
    def run(
        self, tasks: Iterable[EngineTask], work: Work, resume: Resume = FRESH
    ) -> Iterator[ClipResult]:
        """The record of every clip of ``tasks`` not in ``resume.done``, as they finish
        (each input's plan to ``resume.on_plan``); the workers start first, and decode the
        next clips while the model loads (with the first clip to answer: a resume with
        nothing left to answer loads nothing)."""
        self.on_plan = resume.on_plan
        jobs = self.jobs(tasks, work, resume.done)
        try:
            if work.answer is None:
                for job in jobs:
                    yield job.record()
                return
            answering = Answering(work.answer)
            self.model = answering.model
            try:
                yield from answering.records(jobs)
            finally:
                self.load_s, self.generate_s = answering.load_s, answering.generate_s
        finally:
            jobs.close()

    def jobs(
        self, tasks: Iterable[EngineTask], work: Work, done: Collection[str] = ()
    ) -> Generator[ClipJob, None, None]:
        """Start the workers on ``tasks`` now and return the decoded clips (finished by
        ``work.finish``), ok or failed, as they are read. ``tasks`` may be an iterator (a
        streamed manifest): it is read as workers become free, never listed."""
        if self._started:
            raise RuntimeError("a LocalEngine runs once")
        self._started = True
        keep = work.sends_frames
        if self.workers == 0:
            return self._inline(tasks, work, done, keep)
        batch = work.answer.batch_size if work.answer is not None else 1
        prefetch = self.prefetch or max(2 * self.workers, batch)
        self._out = queue.Queue(maxsize=prefetch)
        setup = WorkerSetup(
            cfg=work.cfg,
            done=done,
            finish=work.finish,
            prepare=work.preparer(),
            send_frames=keep,
            use_shm=self.use_shm,
            imports=self.imports,
            log_level=logging.getLogger("framepipe").getEffectiveLevel(),
        )
        check_sendable(setup)
        pending = _Pending(tasks)
        for _ in range(self.workers):
            decoder = DecoderProcess(setup, work.decode_timeout_s, self.start_method)
            self.decoders.append(decoder)
            t = threading.Thread(
                target=self._feed, args=(decoder, pending), name="framepipe-engine", daemon=True
            )
            self._threads.append(t)
            t.start()
        return self._results()

    @property
    def restarts(self) -> int:
        """Decoder processes replaced after a crash or a hang."""
        return sum(d.restarts for d in self.decoders)

    def _results(self) -> Generator[ClipJob, None, None]:
        ended = 0
        try:
            while ended < len(self._threads):
                try:
                    item = self._out.get(timeout=0.5)
                except queue.Empty:
                    continue
                if isinstance(item, _End):
                    ended += 1
                elif isinstance(item, Skipped):
                    self.input_end(item.count, item.plan)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            self.close()

    def _inline(
        self, tasks: Iterable[EngineTask], work: Work, done: Collection[str], keep: bool
    ) -> Generator[ClipJob, None, None]:
        def is_done(key: str) -> bool:
            count = done_count(done, key)
            self.count_skips(count)
            return count > 0

        prepare = work.preparer() if keep else None
        for task in tasks:
            reads = read_clips(
                task.item,
                work.cfg,
                extra_key=task.extra_key,
                is_done=is_done,
                on_plan=lambda plan: self.input_end(0, plan),
            )
            for job in reads:
                run_prepare(prepare, run_finish(work.finish, job))
                if not keep:
                    job.batch = None
                yield job

    def close(self) -> None:
        """Stop the workers and their threads (safe to call twice)."""
        self._stop.set()
        for d in self.decoders:
            d.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=10)

    # -- a worker thread ----------------------------------------------------------------------
    def _feed(self, decoder: DecoderProcess, pending: _Pending) -> None:
        try:
            while not self._stop.is_set():
                work = pending.next()
                if work is None:
                    break
                for out in decoder.run(work):
                    if not self._put(out):
                        return
        except BaseException as exc:  # hand any bug to the caller's thread
            if not self._stop.is_set():
                log.debug("engine thread failed", exc_info=True)
                self._put(exc)
        finally:
            self._put(_End(), force=True)

    def _put(self, item: Any, *, force: bool = False) -> bool:
        """Put ``item`` in the bounded queue, waiting for room; False when stopping."""
        while force or not self._stop.is_set():
            try:
                self._out.put(item, timeout=0.2)
                return True
            except queue.Full:
                if force and self._stop.is_set():
                    return False
        return False


class _Pending:
    """The tasks' iterator, shared by the worker threads, read lazily."""

    def __init__(self, tasks: Iterable[EngineTask]) -> None:
        self._tasks = enumerate(tasks)
        self._lock = threading.Lock()

    def next(self) -> WorkItem | None:
        with self._lock:
            nxt = next(self._tasks, None)
        if nxt is None:
            return None
        k, task = nxt
        return WorkItem(k, task.item, dict(task.extra_key))


ENGINES.register("local", LocalEngine.from_options)
