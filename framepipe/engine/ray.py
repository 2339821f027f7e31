"""The Ray engine: the same stage functions on a Ray cluster, through Ray Data.

The driver (this process) hands the inputs to a stage graph and receives the finished
records back, one Ray Data execution per window of ``window`` inputs (so an input stream of
any length holds at most a window in the driver)::

    inputs ──► read: ReadStage actors (CPU) ──► generate: GenerateStage actors (GPU/CPU) ──► driver
               plan, select, decode in a        load the model once, answer         records to
               child process; frames resized    batches; failed rows pass through   part files
               to the model's input size

- **read** (:mod:`framepipe.engine.ray_read`): ``decode_actors`` actors of
  ``decode_cpus`` CPUs, each with one child decoder process (a crash or a hang past the
  decode timeout is a failed record, never a Ray retry); clips already done (their keys,
  digests, are put in the object store once) are skipped before decoding.
- **generate** (:mod:`framepipe.engine.ray_generate`, caption only): ``generate_actors``
  actors of ``generate_gpus`` GPUs each (default: one per GPU; on a cluster without GPUs
  CPU actors of ``generate_cpus``). Its resources differ from the read stage's, so Ray Data
  never fuses the two operators (:attr:`RayEngine.stats` shows both).
- The records come back to the driver, which writes them (:mod:`framepipe.runs.on_ray`:
  part files, then one merged output).

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
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from framepipe.config import SampleConfig
from framepipe.engine.local import DEFAULT_DECODE_TIMEOUT_S, EngineTask
from framepipe.engine.ray_generate import GenerateSpec, GenerateStage
from framepipe.engine.ray_read import FrameReduce, ReadSpec, ReadStage
from framepipe.engine.worker import Prepare, SkipCounter, WorkerSetup, plugin_modules
from framepipe.errors import ConfigError, FramepipeError
from framepipe.types import ClipResult

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
"""The engines a run can use (``--engine``)."""

RAY_EXTRA = "pip install 'framepipe[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and with what the Ray engine runs; None picks a default from the cluster."""

    address: str | None = None
    """A cluster to join (``host:port``, ``auto``, ``ray://...``); default ``RAY_ADDRESS``,
    else a local Ray is started."""
    decode_actors: int | None = None
    """Read actors (default: the cluster's CPUs left after the generation actors)."""
    decode_cpus: float = 1.0
    """CPUs reserved per read actor (its child decoder process uses them)."""
    generate_actors: int | None = None
    """Generation actors (default: one per ``generate_gpus`` GPUs, or one without GPUs)."""
    generate_gpus: float | None = None
    """GPUs per generation actor (default: 1 where the cluster has GPUs, else 0: CPU actors)."""
    generate_cpus: float = 1.0
    """CPUs per generation actor."""
    batch_size: int | None = None
    """Clips per generation call (default: the generation settings' batch size)."""
    window: int = 100_000
    """Inputs per Ray Data execution (the driver holds at most this many)."""

    def __post_init__(self) -> None:
        for name in ("decode_actors", "generate_actors", "batch_size"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} ({v}) must be >= 1")
        if not self.decode_cpus > 0 or self.generate_cpus < 0:
            raise ConfigError("CPUs per actor must be > 0")
        if self.generate_gpus is not None and self.generate_gpus < 0:
            raise ConfigError(f"GPUs per generation actor ({self.generate_gpus}) must be >= 0")
        if self.window < 1:
            raise ConfigError(f"window ({self.window}) must be >= 1")


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


@dataclass
class RayEngine(SkipCounter):
    """Run tasks through the read (and generate) stages; :meth:`run` yields final records.

    ``prepare`` runs on each decoded clip in the child decoder (e.g. saving frames);
    ``send_frames=False`` drops the frames there. ``generate`` adds the generate stage.
    ``skipped`` counts clips skipped as done; ``stats`` holds Ray Data's stats of the last
    execution (its operators: ``MapBatches(ReadStage)``, ``MapBatches(GenerateStage)``).
    """

    cfg: SampleConfig
    options: RayOptions = field(default_factory=RayOptions)
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S
    done_keys: Collection[str] = ()
    prepare: Prepare | None = None
    send_frames: bool = True
    generate: GenerateSpec | None = None
    reduce: FrameReduce | None = None
    on_skip: Callable[[int], None] | None = None
    skipped: int = 0
    stats: str = ""
    plan: dict[str, Any] = field(default_factory=dict)

    def resources(self, ray: Any) -> dict[str, Any]:
        """Actors and resources per stage, from the options and the cluster."""
        o = self.options
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        out: dict[str, Any] = {"cluster_cpus": cpus, "cluster_gpus": gpus}
        used = 0.0
        if self.generate is not None:
            g = o.generate_gpus if o.generate_gpus is not None else (1.0 if gpus >= 1 else 0.0)
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

    def run(self, tasks: Iterable[EngineTask]) -> Iterator[ClipResult]:
        """The final record of every clip of ``tasks`` not done yet, as they finish."""
        ray = connect(self.options.address)
        from ray.data import ActorPoolStrategy, DataContext

        self.plan = res = self.resources(ray)
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run INFO lines
        ctx.execution_options.preserve_order = False
        imports = tuple(dict.fromkeys(plugin_modules()))
        level = logging.getLogger("framepipe").getEffectiveLevel()
        setup = WorkerSetup(
            cfg=self.cfg,
            prepare=self.prepare,
            send_frames=self.send_frames,
            imports=imports,
            log_level=level,
        )
        read_spec = pickle.dumps(ReadSpec(setup, self.decode_timeout_s, self.reduce))
        done_ref = [ray.put(frozenset(self.done_keys))] if self.done_keys else []
        gen_spec = None
        if self.generate is not None:
            gen_spec = pickle.dumps(
                GenerateSpec(**{**self.generate.__dict__, "imports": imports, "log_level": level})
            )
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
            column = "job"
            if gen_spec is not None:
                g = res["generate"]
                ds = ds.map_batches(
                    GenerateStage,
                    batch_size=self.generate.batch_size if self.generate else 1,
                    batch_format="numpy",
                    compute=ActorPoolStrategy(size=g["actors"]),
                    num_cpus=g["num_cpus"],
                    num_gpus=g["num_gpus"],
                    fn_constructor_kwargs={"spec": gen_spec},
                )
                column = "record"
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for blob, count in zip(batch[column], batch["skipped"]):
                    if not blob:
                        self._count_skips(int(count))
                        continue
                    obj = pickle.loads(blob)
                    yield obj if column == "record" else obj.record
            self.stats = ds.stats()

    def close(self) -> None:
        """Nothing to stop between runs (the local Ray stays up for the process)."""


def start_engine(engine: str, options: RayOptions | None) -> RayOptions | None:
    """Check the ``engine`` name; for ``ray``, join or start Ray now (one-line errors before
    any heavy work) and return the options to run with (else None)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine != "ray":
        return None
    options = options or RayOptions()
    connect(options.address)
    return options
