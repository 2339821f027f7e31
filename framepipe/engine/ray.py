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
before any heavy work.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import islice
from typing import Any

from framepipe.engine.base import ENGINES, EngineBase, EngineOptions, EngineTask, RayOptions, Work
from framepipe.engine.ray_stages import GenerateSpec, GenerateStage, ReadSpec, ReadStage
from framepipe.engine.worker import WorkerSetup, plugin_modules
from framepipe.errors import ConfigError, FramepipeError
from framepipe.records import ClipJob
from framepipe.types import ClipResult

log = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'framepipe[ray]'"


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line FramepipeError naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise FramepipeError(f"--engine ray needs Ray Data ({exc}); {RAY_EXTRA}") from None
    return ray


def connect(address: str | None = None) -> Any:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray (kept
    for the process); an already connected Ray is used as is. Returns the ``ray`` module."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and "://" not in address:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                pass
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise FramepipeError(f"cannot reach the Ray cluster at {address} ({reason})") from None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if not address:  # a local Ray: workers import what this process can (plug-ins, tests)
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        kwargs.update(include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise FramepipeError(f"cannot start or join {where}: {text}") from None
    return ray


class RayEngine(EngineBase):
    """Run tasks through the read (and, with ``work.answer``, generate) stages on Ray Data;
    :meth:`run` yields final records. Made, it has joined (or started) Ray.

    ``stats`` holds Ray Data's stats of the last execution (its operators:
    ``MapBatches(ReadStage)``, ``MapBatches(GenerateStage)``); ``plan`` the actors and
    resources of each stage.
    """

    def __init__(
        self, options: RayOptions | None = None, *, on_skip: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(on_skip)
        self.options = options or RayOptions()
        self.ray = connect(self.options.address)
        self.stats = ""
        self.plan: dict[str, Any] = {}

    @classmethod
    def from_options(cls, options: EngineOptions) -> RayEngine:
        return cls(options.ray, on_skip=options.on_skip)

    def resources(self, generate: bool, gpu: bool = True) -> dict[str, Any]:
        """Actors and resources per stage, from the options and the cluster (``gpu``: whether
        the backend wants one)."""
        o = self.options
        total = self.ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        out: dict[str, Any] = {"cluster_cpus": cpus, "cluster_gpus": gpus}
        used = 0.0
        if generate:
            g = o.generate_gpus
            if g is None:
                g = 1.0 if gpus >= 1 and gpu else 0.0
            n = o.generate_actors or (max(1, int(gpus // g)) if g > 0 else 1)
            out["generate"] = {"actors": n, "num_gpus": g, "num_cpus": o.generate_cpus}
            used += n * o.generate_cpus
            if g * n > gpus:
                raise ConfigError(
                    f"{n} generation actor(s) of {g:g} GPU need {g * n:g} GPUs; "
                    f"the cluster has {gpus:g} GPUs"
                )
        d = o.decode_actors or max(1, int((cpus - used) // o.decode_cpus))
        out["read"] = {"actors": d, "num_cpus": o.decode_cpus}
        need = used + d * o.decode_cpus
        if need > cpus:
            raise ConfigError(
                f"the stages need {need:g} CPUs ({d} read actor(s) of {o.decode_cpus:g}"
                f"{' and the generation actors' if used else ''}); the cluster has {cpus:g} CPUs"
            )
        return out

    def run(
        self, tasks: Iterable[EngineTask], work: Work, done: Collection[str] = ()
    ) -> Iterator[ClipResult]:
        """The final record of every clip of ``tasks`` not in ``done``, as they finish."""
        from ray.data import ActorPoolStrategy, DataContext

        ray = self.ray
        answer = work.answer
        gpu = answer is not None and bool(getattr(answer.backend, "wants_gpu", True))
        self.plan = res = self.resources(answer is not None, gpu)
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run INFO lines
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
        done_ref = [ray.put(frozenset(done))] if done else []
        gen_spec = None if answer is None else pickle.dumps(GenerateSpec(answer, imports, level))
        it = iter(tasks)
        base = 0
        while True:
            window = list(islice(it, self.options.window))
            if not window:
                return
            rows = [{"task": pickle.dumps((base + k, t))} for k, t in enumerate(window)]
            base += len(window)
            del window
            blocks = min(len(rows), max(200, 8 * res["read"]["actors"]))
            ds = ray.data.from_items(rows, override_num_blocks=blocks)
            del rows
            ds = ds.map_batches(
                ReadStage,
                batch_size=1,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=res["read"]["actors"]),
                num_cpus=res["read"]["num_cpus"],
                fn_constructor_kwargs={"spec": read_spec, "done_keys": done_ref},
            )
            if answer is not None:
                g = res["generate"]
                ds = ds.map_batches(
                    GenerateStage,
                    batch_size=answer.batch_size,
                    batch_format="numpy",
                    compute=ActorPoolStrategy(size=g["actors"]),
                    num_cpus=g["num_cpus"],
                    num_gpus=g["num_gpus"],
                    fn_constructor_kwargs={"spec": gen_spec},
                )
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for blob, count in zip(batch["out"], batch["skipped"]):
                    if not blob:
                        self.count_skips(int(count))
                        continue
                    yield self._received(pickle.loads(blob))
            self.stats = ds.stats()

    def _received(self, out: ClipJob | ClipResult | Exception) -> ClipResult:
        if isinstance(out, Exception):  # an error that stops the run (StopRunError)
            raise out
        rec = out.record() if isinstance(out, ClipJob) else out
        if self.model is None and rec.model is not None:
            self.model = rec.model
        self.generate_s += float(rec.timings_s.get("generate_s", 0.0))
        return rec

    def close(self) -> None:
        """Nothing to stop between runs (the local Ray stays up for the process)."""


ENGINES.register("ray", RayEngine.from_options)
