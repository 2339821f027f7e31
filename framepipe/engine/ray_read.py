"""The Ray engine's read stage: a CPU actor that plans, selects and decodes clips in a child
decoder process, and hands the clips on with their frames reduced to what the model needs.

Ray Data has no per-task timeout and retries a task whose worker dies, forever; so the
decoding does not run in the actor itself. Each :class:`ReadStage` actor keeps one child
process (:class:`ChildDecoder`) that speaks the local engine's worker protocol
(:mod:`framepipe.engine.worker`: the same stage functions, the same guarded clip loop). A
child that crashes (a segfault in a decoder) or takes longer than ``decode_timeout_s`` on a
clip is killed; the clip it was on becomes the same ``failed`` record the local engine
writes (:func:`~framepipe.engine.worker.lost_clip`), and the rest of its input is read by a
fresh child. The actor itself never sees the crash, so Ray never retries it.

Rows in: ``{"task": pickle of (task id, EngineTask)}``, one input per call. Rows out, one per
clip: ``{"job": pickle of ClipJob, "skipped": 0}``, and one ``{"job": b"", "skipped": k}`` per
input counting its clips skipped as done.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from framepipe.engine.local import STARTUP_TIMEOUT_S, EngineTask, _died_reason, _stop_process
from framepipe.engine.transfer import PackedFrames, unpack_frames
from framepipe.engine.worker import WorkerSetup, WorkItem, lost_clip, start_worker
from framepipe.errors import FramepipeError
from framepipe.stages import ClipJob
from framepipe.types import FrameBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameReduce:
    """Resize frames to the model's input size before they enter the object store (the
    processor resizes to this size first anyway: checked to give the same pixels)."""

    height: int
    width: int
    resample: int

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        from PIL import Image

        size = (self.width, self.height)
        frames = [
            np.asarray(Image.fromarray(np.asarray(f)).resize(size, resample=self.resample))
            for f in batch.frames
        ]
        return replace(batch, frames=np.stack(frames) if frames else batch.frames)


@dataclass(frozen=True)
class ReadSpec:
    """What every read actor needs (sent once, pickled)."""

    setup: WorkerSetup
    """The child decoder's setup; its ``done_keys`` are left empty and sent by reference."""
    decode_timeout_s: float | None
    reduce: FrameReduce | None = None


class ChildDecoder:
    """One decoder child process, driven over the worker protocol; replaced when lost."""

    def __init__(self, setup: WorkerSetup, decode_timeout_s: float | None) -> None:
        self.setup = setup
        self.decode_timeout_s = decode_timeout_s
        self._ctx: Any = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._ready = False
        self.restarts = 0

    def _spawn(self) -> None:
        self._proc, self._conn = start_worker(self._ctx, self.setup)
        self._ready = False

    def close(self) -> None:
        if self._proc is not None:
            _stop_process(self._proc)
            self._conn.close()
            self._proc = self._conn = None

    def _deadline(self) -> float | None:
        t = self.decode_timeout_s
        if t is not None and not self._ready:  # starting a process is not decoding
            t = max(t, STARTUP_TIMEOUT_S)
        return None if t is None else time.monotonic() + t

    def run(self, work: WorkItem) -> Iterator[ClipJob | int]:
        """The clips of ``work`` (ok or failed), then the count of clips skipped as done."""
        pending = [work]
        skipped = 0
        spawn_failures = 0
        while pending:
            item = pending.pop()
            if self._proc is None or not self._proc.is_alive():
                self.close()
                self._spawn()
            lost: str | None = None
            clip: tuple[str, Any] | None = None
            seen: set[str] = set()
            try:
                self._conn.send(("input", item))
            except OSError:
                lost = _died_reason(self._proc)
            deadline = self._deadline()
            while lost is None:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = wait([self._conn, self._proc.sentinel], timeout=timeout)
                if self._conn in ready or self._conn.poll():
                    try:
                        msg = self._conn.recv()
                    except (EOFError, OSError):
                        lost = _died_reason(self._proc)
                        break
                    kind = msg[0]
                    if kind == "ready":
                        self._ready, spawn_failures = True, 0
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
                        if job.record.key:
                            seen.add(job.record.key)
                        yield job
                        self._conn.send(("next",))
                    elif kind == "end":
                        skipped += int(msg[1])
                        break
                    else:  # pragma: no cover - protocol bug
                        raise RuntimeError(f"unknown message from a decoder: {kind!r}")
                    deadline = self._deadline()
                elif self._proc.sentinel in ready or not self._proc.is_alive():
                    lost = _died_reason(self._proc)
                elif deadline is not None and time.monotonic() > deadline:
                    lost = f"did not finish within {self.decode_timeout_s:g} s"
            if lost is None:
                continue
            was_ready = self._ready
            self.close()
            if not was_ready:  # it died starting up: not the input's fault
                spawn_failures += 1
                if spawn_failures >= 3:
                    raise FramepipeError(f"decoder processes die at start (the {lost})")
                log.warning("a decoder process did not start (the %s); starting another", lost)
                pending.append(item)
                continue
            self.restarts += 1
            recs, rest = lost_clip(item, clip, seen, lost, self.setup.cfg)
            for rec in recs:
                yield ClipJob(rec)
            if rest is not None:
                pending.append(rest)
        yield skipped


class ReadStage:
    """The read actor (``map_batches`` callable class): one child decoder per actor."""

    def __init__(self, spec: bytes, done_keys: list[Any]) -> None:
        import ray

        rs: ReadSpec = pickle.loads(spec)
        for name in rs.setup.imports:  # plug-ins (a user's samplers and source kinds)
            importlib.import_module(name)
        done: frozenset[str] = frozenset(ray.get(done_keys[0])) if done_keys else frozenset()
        logging.getLogger("framepipe").setLevel(rs.setup.log_level)
        self.reduce = rs.reduce
        self.decoder = ChildDecoder(replace(rs.setup, done_keys=done), rs.decode_timeout_s)
        self.decoder._spawn()  # the child starts (imports) while Ray schedules the first task

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        jobs: list[bytes] = []
        skipped: list[int] = []
        for blob in batch["task"]:
            task_id, task = pickle.loads(blob)
            assert isinstance(task, EngineTask)
            work = WorkItem(int(task_id), task.item, dict(task.extra_key))
            for out in self.decoder.run(work):
                if isinstance(out, int):
                    jobs.append(b"")
                    skipped.append(out)
                    continue
                if out.batch is not None and self.reduce is not None and out.ok:
                    out.batch = self.reduce(out.batch)
                out.info = None
                jobs.append(pickle.dumps(out, protocol=5))
                skipped.append(0)
        return {"job": np.array(jobs, dtype=object), "skipped": np.array(skipped, np.int64)}

    def __del__(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()


def frame_reduce_for(spec: Any) -> FrameReduce | None:
    """The reduction for ``spec``'s processor (a :class:`~framepipe.generate.ModelSpec`), when
    resizing first gives the processor exactly the same pixels (checked on random frames of
    two sizes); None otherwise (frames then travel at full size)."""
    ip: Any = getattr(getattr(spec, "processor", None), "image_processor", None)
    if ip is None or not callable(ip):
        return None
    size = getattr(ip, "size", None)
    resample = getattr(ip, "resample", None)
    if isinstance(size, dict):
        height, width = size.get("height"), size.get("width")
    else:  # transformers' SizeDict
        height, width = getattr(size, "height", None), getattr(size, "width", None)
    if height is None or width is None or resample is None or not getattr(ip, "do_resize", 1):
        return None
    red = FrameReduce(int(height), int(width), int(resample))
    try:
        rng = np.random.default_rng(0)
        for shape in ((48, 64, 3), (red.height * 2 + 3, red.width + 5, 3)):
            img = rng.integers(0, 256, shape, dtype=np.uint8)
            small = red(FrameBatch(img[None], (0,))).images()[0]
            a = ip(images=[img], return_tensors="np")["pixel_values"]
            b = ip(images=[small], return_tensors="np")["pixel_values"]
            if not np.array_equal(a, b):
                log.info("frames travel at full size: resizing first changes the model's input")
                return None
    except Exception:
        log.debug("frames travel at full size: the processor check failed", exc_info=True)
        return None
    return red
