"""The engine protocol: the run hands an engine its tasks and what to do with every clip
(:class:`Work`); the engine yields each clip's finished record. The run alone owns resume
(it passes the keys already done, and gets each input's plan for its ledger) and writing.

Engines are plug-ins in the :data:`ENGINES` registry (``local``, ``ray``), made with
:func:`open_engine` from one :class:`EngineOptions`; the command line reads its choices from
the registry. An engine decodes in processes watched by the decoder supervisor
(:mod:`framepipe.engine.supervisor`) and, for ``caption``, answers with
:class:`~framepipe.answering.Answering`, wherever it runs the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.errors import ConfigError
from framepipe.records import ClipJob, InputPlan
from framepipe.registry import Registry
from framepipe.types import ClipResult

if TYPE_CHECKING:
    from framepipe.answering import AnswerSpec

DEFAULT_DECODE_TIMEOUT_S = 300.0
"""How long one clip (open, sample and read) may take before its decoder is stopped."""

Finish = Callable[[ClipJob], None]
"""A picklable function run on each clip read without error, in the decoding process (e.g.
saving its frames: it adds their paths with ``job.add``, or fails the job)."""
Prepare = Callable[[list[Any]], Any]
"""A picklable function that makes a clip's frames into what the answering backend takes,
in the decoding process (see :meth:`~framepipe.generate.backend.BackendSpec.prepare`)."""

OnPlan = Callable[[InputPlan], None]
"""Called in the caller's thread with the plan of each input read to its end (the run keeps
it in its ledger, so that a re-run skips the input once its clips are all done)."""


@dataclass(frozen=True)
class EngineTask:
    """One input to read, and what joins its clips' resume keys (model, questions ...)."""

    item: Input
    extra_key: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Work:
    """What an engine does with every clip of its tasks (picklable)."""

    cfg: SampleConfig
    """How clips are cut and frames chosen."""
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S
    """How long one clip may take to read before its decoder is stopped (None: no limit)."""
    finish: Finish | None = None
    """Run on each clip read without error, where it was read (e.g. saving its frames)."""
    answer: AnswerSpec | None = None
    """What answers each clip (``caption``)."""
    keep_frames: bool = False
    """Keep the decoded frames of clips nothing answers (for :meth:`LocalEngine.jobs`)."""

    @property
    def sends_frames(self) -> bool:
        """Whether decoded frames come back from the decoding processes."""
        return self.keep_frames or self.answer is not None

    def preparer(self) -> Prepare | None:
        """What the decoding processes make of each clip's frames for the answering backend
        (None: the frames come back as they are)."""
        return self.answer.backend.prepare() if self.answer is not None else None

    def __post_init__(self) -> None:
        t = self.decode_timeout_s
        if t is not None and not t > 0:
            raise ConfigError(f"decode timeout ({t}) must be > 0 seconds")


@dataclass(frozen=True)
class Resume:
    """What the run already holds, so that an engine skips it."""

    done: Collection[str] = ()
    """Clip keys, or keys and their clip counts, with the plan keys of finished inputs,
    which are skipped whole (:func:`~framepipe.records.done_count`)."""
    on_plan: OnPlan | None = None
    """Gets the plan of each input read to its end."""


FRESH = Resume()
"""Nothing done yet."""


Pool = int | tuple[int, int | None]
"""An actor pool's size: a count, or ``(min, max)``: it starts with ``min`` actors and grows
up to ``max`` (None: no limit) as the cluster does (Ray Data's ``ActorPoolStrategy``)."""


def pool_bounds(pool: Pool | str | None, name: str) -> tuple[int, int | None] | None:
    """``pool`` as ``(min, max)`` (``"MIN:MAX"``, ``"N"``, ``N`` or a pair; None stays None);
    ConfigError unless 1 <= min <= max."""
    if pool is None:
        return None
    shown = f"{name} {pool if isinstance(pool, str) else repr(pool)}:"
    if isinstance(pool, str):
        lo_text, sep, hi_text = pool.partition(":")
        try:
            pool = (int(lo_text), int(hi_text) if hi_text else None) if sep else int(pool)
        except ValueError:
            raise ConfigError(f"{shown} must be N or MIN:MAX") from None
    lo, hi = (int(pool), int(pool)) if isinstance(pool, int) else pool
    if hi is not None and int(hi) < int(lo):
        raise ConfigError(f"{shown} MIN ({lo}) must be <= MAX ({hi})")
    if int(lo) < 1:
        which = "" if isinstance(pool, int) else f" MIN ({lo})"
        raise ConfigError(f"{shown}{which} must be >= 1")
    return int(lo), None if hi is None else int(hi)


@dataclass(frozen=True)
class RayOptions:
    """Where and with what the Ray engine runs; None picks a default from the cluster."""

    address: str | None = None
    """A cluster to join (``host:port``, ``auto``, ``ray://...``); default ``RAY_ADDRESS``,
    else a local Ray is started."""
    decode_actors: Pool | None = None
    """Read actors, a count or ``(min, max)`` (default: from the cluster's CPUs left after
    the generation actors, growing with the cluster)."""
    decode_cpus: float = 1.0
    """CPUs reserved per read actor (its child decoder process uses them)."""
    generate_actors: Pool | None = None
    """Generation actors, a count or ``(min, max)`` (default: from one per
    ``generate_gpus`` GPUs, growing with the cluster; one without GPUs)."""
    generate_gpus: float | None = None
    """GPUs per generation actor (default: 1 where the cluster has GPUs, else 0: CPU actors)."""
    generate_cpus: float = 1.0
    """CPUs per generation actor."""
    window: int = 100_000
    """Inputs per Ray Data execution (the driver holds at most this many)."""

    def __post_init__(self) -> None:
        for name in ("decode_actors", "generate_actors"):
            pool_bounds(getattr(self, name), name.replace("_", " "))
        if not self.decode_cpus > 0 or self.generate_cpus < 0:
            raise ConfigError("CPUs per actor must be > 0")
        if self.generate_gpus is not None and self.generate_gpus < 0:
            raise ConfigError(f"GPUs per generation actor ({self.generate_gpus}) must be >= 0")
        if self.window < 1:
            raise ConfigError(f"window ({self.window}) must be >= 1")


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs; each engine reads the options that concern it."""

    workers: int | None = None
    """``local``: decoding processes (None: :func:`default_workers`; 0: in this process)."""
    prefetch: int | None = None
    """``local``: decoded clips kept ready ahead of the model (None: the larger of twice
    the workers and the batch size)."""
    ray: RayOptions | None = None
    """``ray``: the cluster, actors and resources."""
    on_skip: Callable[[int], None] | None = None
    """Called in the caller's thread with each count of clips skipped as done."""


def default_workers() -> int:
    """Decoding processes by default: two, or one on a single-core machine."""
    return max(1, min(2, os.cpu_count() or 1))


class Engine(Protocol):
    """Runs tasks and yields each clip's finished record (in the order they finish)."""

    skipped: int
    """Clips skipped because their key was done."""
    load_s: float
    """Seconds spent loading the model (caption; where several actors load it at once, the
    longest of their loads)."""
    generate_s: float
    """Seconds spent generating (caption; summed over the actors that generate)."""
    model: dict[str, Any] | None
    """The loaded model as its records describe it (caption), once known."""

    def run(
        self, tasks: Iterable[EngineTask], work: Work, resume: Resume = FRESH
    ) -> Iterator[ClipResult]:
        """The record of every clip of ``tasks`` that ``resume`` does not hold, as they
        finish; ``resume.on_plan`` gets each input's plan."""
        ...

    def close(self) -> None:
        """Stop whatever still runs (safe to call twice)."""
        ...


class EngineBase:
    """What every engine counts, and the skip callback."""

    def __init__(self, on_skip: Callable[[int], None] | None = None) -> None:
        self.on_skip = on_skip
        self.skipped = 0
        self.load_s = 0.0
        self.generate_s = 0.0
        self.model: dict[str, Any] | None = None
        self.on_plan: OnPlan | None = None

    def count_skips(self, count: int) -> None:
        if count:
            self.skipped += count
            if self.on_skip is not None:
                self.on_skip(count)

    def input_end(self, skipped: int, plan: InputPlan | None) -> None:
        """An input is done with: count its clips skipped, hand its plan on."""
        self.count_skips(skipped)
        if plan is not None and self.on_plan is not None:
            self.on_plan(plan)


ENGINES: Registry[Callable[[EngineOptions], Engine]] = Registry(
    "engine", {"local": "framepipe.engine.local", "ray": "framepipe.engine.ray"}
)
"""Engines by name (``--engine``); each is made from :class:`EngineOptions`."""


def open_engine(name: str, options: EngineOptions | None = None) -> Engine:
    """The engine ``name`` made from ``options``: a cluster engine checks now that its
    cluster's address answers, so that a cluster that cannot be reached is a one-line error
    before any heavy work (it joins it with the first input it must read)."""
    return ENGINES.get(name)(options or EngineOptions())
