"""The generation backend protocol: what the answer stage needs from a model.

A :class:`BackendSpec` is what a run knows before any weight is loaded (picklable, so it
travels to a cluster's generation actors): it checks that n frames and the questions fit
(:meth:`~BackendSpec.check`), says what identifies its answers in resume keys
(:meth:`~BackendSpec.key`) and how its answers are decoded (``settings``), what the decoding
processes make of each clip's frames for it (:meth:`~BackendSpec.prepare`), whether it wants
a GPU (``wants_gpu``), and loads the model once where the answers are made
(:meth:`~BackendSpec.load`). What it loads is a :class:`Backend`: it answers a batch of
:class:`~framepipe.generate.config.Request`\\ s, each with its answer or its own error, and
describes itself for the record (``model``). An error every later request would hit too is a
:class:`~framepipe.errors.StopRunError`, which stops the run instead of failing every clip.

Backends are plug-ins in the :data:`BACKENDS` registry. :class:`TransformersBackend` runs the
model in this process with transformers (:class:`~framepipe.generate.generator.Generator`);
``openai`` (:class:`~framepipe.generate.server.OpenAIBackend`) asks an OpenAI-compatible
server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from framepipe.errors import ConfigError, FramepipeError
from framepipe.generate.config import (
    Answer,
    GenerationSettings,
    ModelConfig,
    Prepared,
    Request,
    as_settings,
    check_token_ids,
    given_token_ids,
)
from framepipe.registry import Registry

if TYPE_CHECKING:
    from framepipe.generate.device import Runtime
    from framepipe.generate.spec import ModelSpec

log = logging.getLogger(__name__)


class Backend(Protocol):
    """A loaded model that answers requests."""

    def answer_each(self, requests: Sequence[Request]) -> list[Answer | FramepipeError]:
        """One answer per request, in order; a request that cannot be answered (its prompt
        does not fit, it runs out of memory alone) gets its error in its place."""
        ...

    def describe(self) -> dict[str, Any]:
        """The model as every record names it (id, revision, dtype, device, random_weights)."""
        ...


class BackendSpec(Protocol):
    """A backend known before it loads (picklable)."""

    settings: GenerationSettings
    """How answers are decoded (``batch_size``: requests answered together)."""

    def check(self, n: int, questions: Iterable[Sequence[str]], system: str | None) -> None:
        """Raise (one line) when ``n`` frames and any of the question sets cannot be asked."""
        ...

    def key(self) -> dict[str, Any]:
        """What identifies this backend's answers in resume keys."""
        ...

    def describe(self) -> dict[str, Any]:
        """The model as every record names it, known before it loads (so that a run with
        nothing to answer loads nothing, and its records are the same)."""
        ...

    def random_weights(self) -> bool:
        """Whether its answers are noise (a model with random weights)."""
        ...

    wants_gpu: bool
    """Whether answering runs a model here (a cluster gives its generation actors a GPU)."""

    def prepare(self) -> Callable[[list[np.ndarray]], Prepared] | None:
        """What the decoding processes make of each clip's frames for this backend (a
        picklable step, run where the clip is decoded so the answer stage never waits on
        it), or None to hand the frames over as they are."""
        ...

    def load(self) -> Backend:
        """The loaded backend (loaded once per process, then kept)."""
        ...


class TransformersBackend:
    """The model in this process, with transformers (the default backend).

    ``generator``: one already loaded (a :class:`~framepipe.generate.Generator`, or any
    object with ``answer_each`` or ``answer``, and ``describe``), used as it is.
    """

    name = "transformers"
    wants_gpu = True
    folder: Path | None = None
    """The local folder the model was found in where the backend was sent from (set when
    it is pickled), where it loads: a worker with another working directory (a cluster's)
    would take a relative path, or a hub id a folder there shadowed, as naming something
    else. A class default, so that a backend pickled without it (an older driver) loads."""
    loaded_here = False
    """Whether ``generator`` is the model this backend loaded (:meth:`load`), not one given:
    a pickled copy (a cluster's actor, a process pool's worker) leaves it behind, as the
    spec, and loads its own; a loaded torch model neither pickles nor should travel."""

    def __init__(
        self,
        model: ModelConfig | str | os.PathLike[str] | None = None,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        generator: Any = None,
    ) -> None:
        if model is None or isinstance(model, (str, os.PathLike)):
            model = ModelConfig() if model is None else ModelConfig(model=str(model))
        if not isinstance(model, ModelConfig):  # e.g. a model loaded with from_pretrained
            raise TypeError(
                f"model must be a hub id, a local folder or a ModelConfig, not "
                f"{type(model).__name__} (framepipe loads the model itself)"
            )
        answers = any(callable(getattr(generator, a, None)) for a in ("answer_each", "answer"))
        if generator is not None and not (
            answers and callable(getattr(generator, "describe", None))
        ):
            raise TypeError(
                f"generator must be a framepipe.generate.Generator (or have answer_each or "
                f"answer, and describe), not {type(generator).__name__}; for a model of your "
                f"own, pass its hub id or folder as model="
            )
        self.token_ids = given_token_ids(settings)
        """The token ids a GenerationConfig given as ``settings`` set (:meth:`check` makes
        sure they are the model's own: see :func:`~framepipe.generate.config.as_settings`)."""
        settings = as_settings(settings, token_ids=True)
        self.model = model
        given = getattr(generator, "settings", None)
        self.settings = settings or given or GenerationSettings()
        self.generator = generator
        self.spec: ModelSpec | None = getattr(generator, "spec", None)
        self._runtime: Runtime | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the spec (processor, tokenizer) stays here, and its folder goes; the runtime is
        # resolved where it runs
        folder = self.spec.local_dir if self.spec is not None else self.folder
        state = {**self.__dict__, "spec": None, "folder": folder, "_runtime": None}
        if self.loaded_here:
            state.update(generator=None, loaded_here=False)
        return state

    def runtime(self) -> Runtime:
        """Device, dtype, attention and quantization, resolved once here (so a warning
        about them is said once, not at every check, key and load)."""
        if self._runtime is None:
            from framepipe.generate.device import resolve_runtime

            self._runtime = resolve_runtime(self.model)
        return self._runtime

    def inspect(self) -> ModelSpec | None:
        """The model's spec (config and processor, no weights), read once; None for a given
        generator without one."""
        if self.spec is None and self.generator is None:
            from framepipe.generate.spec import ModelSpec

            self.spec = ModelSpec.inspect(self.model, self.folder)
        return self.spec

    def check(self, n: int, questions: Iterable[Sequence[str]], system: str | None) -> None:
        spec = self.inspect()
        if spec is None:
            if self.token_ids:
                raise ConfigError(
                    f"settings (a GenerationConfig): {', '.join(self.token_ids)} cannot be "
                    "checked against a given generator's model (leave them out)"
                )
            return
        if self.token_ids:
            check_token_ids(self.token_ids, spec.generation_config(), self.model.model)
        for qs in dict.fromkeys(tuple(q) for q in questions):
            spec.check_fits(n, list(qs), system=system, max_new_tokens=self.settings.max_new_tokens)

    def describe(self) -> dict[str, Any]:
        if self.generator is not None:
            return dict(self.generator.describe())
        from framepipe.generate.spec import describe_model

        spec = self.inspect()
        assert spec is not None
        return describe_model(spec, self.runtime())

    def key(self) -> dict[str, Any]:
        info = self.describe()
        key = {k: info.get(k) for k in ("id", "revision", "path", "dtype", "quantize")}
        path = info.get("path")
        if path and not info.get("revision"):
            from framepipe.records import local_weights_fingerprint

            key["weights"] = local_weights_fingerprint(Path(str(path)))
        return key

    def random_weights(self) -> bool:
        if self.generator is not None:
            return bool(self.generator.describe().get("random_weights"))
        spec = self.inspect()
        return bool(spec is not None and spec.random_weights)

    def prepare(self) -> Callable[[list[np.ndarray]], Prepared] | None:
        if self.spec is None:  # a given generator without a spec reads frames itself
            return None
        from framepipe.generate.spec import PixelValues

        return PixelValues(self.spec)

    def load(self) -> Backend:
        if self.generator is None:
            from framepipe.generate.generator import Generator

            self.generator = Generator.load(
                self.model, self.settings, spec=self.inspect(), runtime=self.runtime()
            )
            self.loaded_here = True
        return _as_backend(self.generator)


def _as_backend(gen: Any) -> Backend:
    """``gen`` as a :class:`Backend`: one with only ``answer`` (all or nothing) answers
    through it."""
    if callable(getattr(gen, "answer_each", None)):
        return gen
    return _AllOrNothing(gen)


class _AllOrNothing:
    def __init__(self, gen: Any) -> None:
        self.gen = gen

    def answer_each(self, requests: Sequence[Request]) -> list[Answer | FramepipeError]:
        return list(self.gen.answer(requests))

    def describe(self) -> dict[str, Any]:
        return dict(self.gen.describe())


BACKENDS: Registry[type[Any]] = Registry(
    "backend", {"transformers": __name__, "openai": "framepipe.generate.server"}
)
"""Generation backends by name (``--backend``)."""
BACKENDS.register("transformers", TransformersBackend)
