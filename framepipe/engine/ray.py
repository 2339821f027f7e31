"""The Ray engine: the same stages on a Ray cluster, through Ray Data.

The driver (this process) hands the inputs to a stage graph and receives the finished
records back, one Ray Data execution per window of ``window`` inputs (so an input stream of
any length holds at most a window in the driver)::

    inputs ──► read: ReadStage actors (CPU) ──► generate: GenerateStage actors (GPU/CPU) ──► driver
               plan, select, decode in a        load the backend once, answer       records to
               supervised decoder process;      batches; failed clips pass          the run
               frames prepared for the          through as records
               backend (pixel values)

- **read** (:class:`~framepipe.engine.ray_stages.ReadStage`): ``decode_actors`` actors of
  ``decode_cpus`` CPUs, each with one decoder process under the decoder supervisor (a crash
  or a hang past the decode timeout is a failed record, never a Ray retry); clips already
  done (their keys are put in the object store once) are skipped before decoding.
- **generate** (:class:`~framepipe.engine.ray_stages.GenerateStage`, caption only):
  ``generate_actors`` actors of ``generate_gpus`` GPUs each (default: one per GPU; on a
  cluster without GPUs, or for a backend that runs no model here such as a server's HTTP
  clients, CPU actors of ``generate_cpus``). Its resources differ from the read
  stage's, so Ray Data never fuses the two operators (:attr:`RayEngine.stats` shows both).

:func:`connect` joins ``address`` (or ``RAY_ADDRESS``) or starts a local Ray; an
unreachable address or a missing ``ray`` extra is a one-line :class:`FramepipeError`
before any heavy work. Ray's own messages reach the terminal as framepipe's verbosity says
(:func:`ray_console_level`); Ray Data's stay in its log file (``ray-data.log`` in the
session's logs).
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import signal
import socket
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import islice
from typing import Any

from framepipe.discovery import anchored
from framepipe.engine.base import (
    ENGINES,
    FRESH,
    EngineBase,
    EngineOptions,
    EngineTask,
    RayOptions,
    Resume,
    Work,
    pool_bounds,
)
from framepipe.engine.ray_stages import GenerateSpec, GenerateStage, ReadSpec, ReadStage
from framepipe.engine.worker import WorkerSetup, plugin_modules
from framepipe.errors import ConfigError, FramepipeError, MissingDependencyError
from framepipe.read_clips import skipped_unopened
from framepipe.records import ClipJob
from framepipe.types import ClipResult

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 2
"""Batches a generation actor answers at once for a backend that keeps requests in flight
(a server's clients): the next batch's requests start while one batch's last ones end."""

Stages = Callable[[list[dict[str, bytes]]], Any]
"""A window's rows (pickled tasks) to their Ray dataset through the read (and generate)
stages."""


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line MissingDependencyError naming the
    extra (a usage error, exit status 2, as every missing extra)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError("ray[data]", "ray", f"--engine ray; {exc}") from None
    return ray


def connect(address: str | None = None) -> Any:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray (kept
    for the process); an already connected Ray is used as is. Returns the ``ray`` module.

    A ``host:port`` address is checked first (:func:`check_gcs`): ``ray.init`` has no
    connection timeout of its own and, given an address where nothing listens, retries for
    over a minute, or, where another server listens (a dashboard's port, a web server), for
    over ten minutes (measured with Ray 2.60), before its error.

    ``ray.init`` replaces the process's SIGTERM handler with its own (``sys.exit(15)``, after
    its core's stack dump on stderr); a handler this process had chosen (the CLI's, which
    stops a run as Ctrl-C does: its line and exit status 143) is put back."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = checked_address(address)
    kwargs: dict[str, Any] = {"logging_level": ray_console_level(), "log_to_driver": True}
    if not address:  # a local Ray: workers import what this process can (plug-ins, tests)
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        kwargs.update(include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise FramepipeError(f"cannot start or join {where}: {text}") from None
    finally:
        if callable(before):  # not SIG_DFL / SIG_IGN (ints), nor a handler set outside Python
            signal.signal(signal.SIGTERM, before)
    return ray


def checked_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS`` (None: a local Ray); a
    ``host:port`` one checked first (:func:`check_gcs`)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and "://" not in address:
        check_gcs(address)
    return address


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS) answers
# with its own SETTINGS frame (frame type 4, the fourth byte)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_gcs(address: str, timeout_s: float = 5.0) -> None:
    """A one-line FramepipeError unless a gRPC server, as a Ray head's GCS is, answers at
    ``host:port`` within ``timeout_s`` (to connect, then to answer HTTP/2's preface); with
    ``RAY_USE_TLS`` only the connection is tried."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise FramepipeError(f"cannot reach the Ray cluster at {address} (no port: HOST:PORT)")
    try:
        sock = socket.create_connection(
            (host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s
        )
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise FramepipeError(f"cannot reach the Ray cluster at {address} ({reason})") from None
    answer = b""
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        try:  # nothing said back in time, or a reset: not a gRPC server either
            sock.sendall(H2_PREFACE)
            while len(answer) < 4 and (part := sock.recv(9 - len(answer))):
                answer += part
        except OSError:
            pass
    if len(answer) < 4 or answer[3] != 4:
        raise FramepipeError(
            f"cannot reach the Ray cluster at {address} (what listens there is not a Ray "
            "head: give the head's GCS port, 6379 by default)"
        )


def ray_console_level() -> int:
    """Which of Ray's own messages reach the terminal: its errors at framepipe's default
    verbosity, its warnings too with ``-v`` (framepipe at INFO), everything with ``-vv``."""
    level = logging.getLogger("framepipe").getEffectiveLevel()
    if level >= logging.WARNING:
        return logging.ERROR
    return logging.WARNING if level >= logging.INFO else logging.INFO


def quiet_ray_data() -> None:
    """Ray Data's own terminal handlers at :func:`ray_console_level` (its log file keeps
    all; other handlers there, an application's, are left alone)."""
    for h in logging.getLogger("ray.data").handlers:
        if isinstance(h, logging.StreamHandler) and type(h).__module__.startswith("ray."):
            h.setLevel(ray_console_level())


class RayEngine(EngineBase):
    """Run tasks through the read (and, with ``work.answer``, generate) stages on Ray Data;
    :meth:`run` yields final records. Made, it has checked that Ray is installed and that a
    ``host:port`` address answers; it joins (or starts) Ray with the first input it must
    read, so that a run with nothing left to read starts neither Ray nor actors.

    ``stats`` holds Ray Data's stats of the last execution (its operators:
    ``MapBatches(ReadStage)``, ``MapBatches(GenerateStage)``); ``plan`` the actors and
    resources of each stage.
    """

    def __init__(
        self, options: RayOptions | None = None, *, on_skip: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(on_skip)
        self.options = options or RayOptions()
        require_ray()  # a missing extra, or an address where no Ray listens: one line now
        checked_address(self.options.address)
        self._ray: Any = None
        self.stats = ""
        self.plan: dict[str, Any] = {}

    @property
    def ray(self) -> Any:
        """The ``ray`` module, Ray joined (or started) on first use: a run that finds every
        input done never starts it."""
        if self._ray is None:
            self._ray = connect(self.options.address)
        return self._ray

    @ray.setter
    def ray(self, module: Any) -> None:
        self._ray = module

    @classmethod
    def from_options(cls, options: EngineOptions) -> RayEngine:
        return cls(options.ray, on_skip=options.on_skip)

    def resources(self, generate: bool, gpu: bool = True) -> dict[str, Any]:
        """Actors (``(min, max)``, max None: as many as the cluster places) and resources per
        stage, from the options and the cluster (``gpu``: whether the backend wants one).
        ConfigError only for what can never be placed: an actor bigger than every node (and
        node type the autoscaler may add), or minimum pools larger than a cluster without an
        autoscaler."""
        o = self.options
        total = self.ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        shapes, grows = node_shapes(self.ray)
        out: dict[str, Any] = {"cluster_cpus": cpus, "cluster_gpus": gpus}
        used = 0.0
        if generate:
            g = o.generate_gpus
            if g is None:
                g = 1.0 if gpus >= 1 and gpu else 0.0
            given = pool_bounds(o.generate_actors, "generate actors")
            lo, hi = given or ((max(1, int(gpus // g)), None) if g > 0 else (1, 1))
            out["generate"] = {"actors": (lo, hi), "num_gpus": g, "num_cpus": o.generate_cpus}
            fits(shapes, "generation actor", CPU=o.generate_cpus, GPU=g)
            used += lo * o.generate_cpus
            if g * lo > gpus and not grows:
                raise ConfigError(
                    f"{lo} generation actor(s) of {g:g} GPU need {g * lo:g} GPUs; "
                    f"the cluster has {gpus:g} GPUs"
                )
        given = pool_bounds(o.decode_actors, "decode actors")
        lo, hi = given or (max(1, int((cpus - used) // o.decode_cpus)), None)
        out["read"] = {"actors": (lo, hi), "num_cpus": o.decode_cpus}
        fits(shapes, "read actor", CPU=o.decode_cpus)
        need = used + lo * o.decode_cpus
        if need > cpus and not grows:
            raise ConfigError(
                f"the stages need {need:g} CPUs ({lo} read actor(s) of {o.decode_cpus:g}"
                f"{' and the generation actors' if used else ''}); the cluster has {cpus:g} CPUs"
            )
        return out

    def run(
        self, tasks: Iterable[EngineTask], work: Work, resume: Resume = FRESH
    ) -> Iterator[ClipResult]:
        """The final record of every clip of ``tasks`` not in ``resume.done``, as they
        finish (each input's plan to ``resume.on_plan``). An input the resume skips whole
        (its plan in the ledger, or its failure) is skipped here, as the local engine's
        decoder supervisor skips it: Ray starts, and the actors are made, only for a window
        with an input to read. Relative local paths go to the actors made absolute
        (:func:`~framepipe.discovery.anchored`): their working directory is another."""
        self.on_plan, done = resume.on_plan, resume.done
        it = iter(tasks)
        base = 0
        stages: Stages | None = None
        while True:
            window = list(islice(it, self.options.window))
            if not window:
                return
            rows = []
            for k, t in enumerate(window, base):
                skipped = skipped_unopened(t.item, work.cfg, t.extra_key, done)
                if skipped:
                    self.input_end(skipped, None)
                    continue
                task = EngineTask(anchored(t.item), t.extra_key)
                rows.append({"task": pickle.dumps((k, task))})
            base += len(window)
            del window
            if not rows:
                continue
            stages = stages or self._stages(work, done)
            ds = stages(rows)
            del rows
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                self.load_s = max(self.load_s, float(batch["load_s"].max(initial=0.0)))
                self.generate_s += float(batch["generate_s"].sum())
                for blob, count, plan in zip(batch["out"], batch["skipped"], batch["plan"]):
                    if not blob:
                        self.input_end(int(count), pickle.loads(plan) if plan else None)
                        continue
                    yield self._received(pickle.loads(blob))
            self.stats = ds.stats()

    def _stages(self, work: Work, done: Collection[str]) -> Stages:
        """Ray joined, the stages' resources planned (:attr:`plan`) and their specs sent
        once: a function of a window's rows to its dataset through the stages."""
        from ray.data import ActorPoolStrategy, DataContext

        ray = self.ray
        answer = work.answer
        gpu = answer is not None and bool(getattr(answer.backend, "wants_gpu", True))
        self.plan = res = self.resources(answer is not None, gpu)
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        quiet_ray_data()
        ctx.execution_options.preserve_order = False
        imports = plugin_modules()
        level = logging.getLogger("framepipe").getEffectiveLevel()
        setup = WorkerSetup(
            cfg=work.cfg,
            finish=work.finish,
            prepare=work.preparer(),
            send_frames=work.sends_frames,
            imports=imports,
            log_level=level,
        )
        read_spec = pickle.dumps(ReadSpec(setup, work.decode_timeout_s))
        done_ref = [ray.put(done)] if done else []
        gen_spec = None if answer is None else pickle.dumps(GenerateSpec(answer, imports, level))

        def stages(rows: list[dict[str, bytes]]) -> Any:
            count = len(rows)
            blocks = min(count, max(200, 8 * res["read"]["actors"][0]))
            ds = ray.data.from_items(rows, override_num_blocks=blocks)
            ds = ds.map_batches(
                ReadStage,
                batch_size=1,
                batch_format="numpy",
                compute=pool(ActorPoolStrategy, res["read"]["actors"], count),
                num_cpus=res["read"]["num_cpus"],
                fn_constructor_kwargs={"spec": read_spec, "done": done_ref},
            )
            if answer is not None:
                g = res["generate"]
                # a server's clients: the next batch's requests start while one drains
                calls = (
                    BATCHES_IN_FLIGHT if callable(getattr(answer.backend, "in_flight", None)) else 1
                )
                ds = ds.map_batches(
                    GenerateStage,
                    batch_size=answer.batch_size,
                    batch_format="numpy",
                    compute=pool(ActorPoolStrategy, g["actors"], calls=calls),
                    num_cpus=g["num_cpus"],
                    num_gpus=g["num_gpus"],
                    fn_constructor_kwargs={"spec": gen_spec},
                )
            return ds

        return stages

    def _received(self, out: ClipJob | ClipResult | Exception) -> ClipResult:
        if isinstance(out, Exception):  # an error that stops the run (StopRunError)
            raise out
        rec = out.record() if isinstance(out, ClipJob) else out
        if self.model is None and rec.model is not None:
            self.model = rec.model
        return rec

    def close(self) -> None:
        """Nothing to stop between runs (the local Ray stays up for the process)."""


def pool(
    strategy: Any, bounds: tuple[int, int | None], inputs: int | None = None, calls: int = 1
) -> Any:
    """Ray Data's actor pool of ``(min, max)`` actors (max None: no limit), no more than
    ``inputs`` (an actor without an input to read is never started); ``calls``: batches
    each actor works on at once, in threads (where this Ray has
    ``max_concurrent_calls_per_actor`` and ``enable_true_multi_threading``, Ray 2.5x;
    one at a time on an older one)."""
    lo, hi = bounds
    if inputs is not None:
        lo, hi = min(lo, inputs), min(hi or inputs, inputs)
    kw: dict[str, Any] = {"size": lo} if lo == hi else {"min_size": lo, "max_size": hi}
    params = inspect.signature(strategy).parameters
    if calls > 1 and "enable_true_multi_threading" in params:
        kw.update(max_concurrent_calls_per_actor=calls, enable_true_multi_threading=True)
    return strategy(**kw)


def node_shapes(ray: Any) -> tuple[list[dict[str, float]], bool]:
    """The resources of each node of the cluster and of each node type its autoscaler may
    add, and whether it may add any."""
    shapes = [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]
    grows = False
    try:  # Ray's own test of an autoscaling cluster (ray.data's cluster_autoscaler.util)
        import ray._private.state as state

        config = state.state.get_cluster_config()
        for group in getattr(config, "node_group_configs", None) or ():
            if group.resources and group.max_count != 0:
                shapes.append({k: float(v) for k, v in group.resources.items()})
                grows = grows or group.max_count == -1 or group.max_count > group.min_count
    except Exception:  # no autoscaler, or another Ray: the nodes there are
        log.debug("no autoscaler configuration", exc_info=True)
    return shapes, grows


def fits(shapes: list[dict[str, float]], what: str, **need: float) -> None:
    """ConfigError unless some node (or node type) has ``need`` (``CPU``, ``GPU``)."""
    if any(all(shape.get(k, 0.0) >= v for k, v in need.items() if v) for shape in shapes):
        return
    wants = " and ".join(f"{v:g} {k}s" for k, v in need.items() if v)
    raise ConfigError(f"one {what} needs {wants}; no node of the cluster has that much")


ENGINES.register("ray", RayEngine.from_options)
