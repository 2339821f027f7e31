"""The sampler interface and the registry of samplers by name.

A sampler is any callable with this signature::

    def my_sampler(info: SourceInfo, clip: ClipSpec, *, n: int,
                   source: Source | None = None, **params) -> Selection

It chooses indices from metadata alone (``info`` and ``clip``); samplers that need a cheap
signal ask the source for it and never open a file or decode full frames: the keyframe
sampler's shots come from :mod:`framepipe.shots` (over ``source.read_signal``), the n-view
sampler's thumbnails from ``source.read_small`` and a render's surface from
``source.visible_surface``. The same inputs give the same indices. Built-in samplers refuse
an option they do not have or a bad value (:func:`check_args` and their own check, which a
run also calls before any input is read: :func:`check_sampler`). A user's own sampler is
registered with :func:`register_sampler` (``check=`` its own check) or passed directly to
the pipeline as a callable.

An option given at its default is the same setting as one left out, and makes the same
resume keys (:func:`canonical_params`): the defaults are those of the sampler's keyword
parameters and those it declares for the options it reads from ``**params``
(``register_sampler(name, defaults=...)``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from framepipe.errors import ConfigError, SamplingError, did_you_mean
from framepipe.registry import CHECK_ATTRIBUTE, DEFAULTS_ATTRIBUTE, Registry, run_check
from framepipe.types import ClipSpec, Selection, SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)

OverflowPolicy = Literal["repeat_last", "all", "error"]
"""What to do when n is larger than the frames in the clip:

- ``repeat_last``: return n indices, repeating the last frame (the model sees n images);
- ``all``: return every frame of the clip once (fewer than n);
- ``error``: raise :class:`SamplingError`.
"""
DEFAULT_OVERFLOW: OverflowPolicy = "repeat_last"
"""The policy of a sampler that is given no ``overflow``."""


class Sampler(Protocol):
    def __call__(
        self,
        info: SourceInfo,
        clip: ClipSpec,
        *,
        n: int,
        source: Source | None = None,
        **params: Any,
    ) -> Selection: ...


SAMPLERS: Registry[Sampler] = Registry(
    "sampler",
    {
        "uniform": "framepipe.samplers.uniform",
        "keyframe": "framepipe.samplers.keyframe",
        "iframe": "framepipe.samplers.iframe",
        "nview": "framepipe.samplers.nview",
    },
    entry_point_group="framepipe.samplers",
)
"""Samplers by name: the built-ins, those registered with :func:`register_sampler`, and
installed plug-ins (entry-point group ``framepipe.samplers``)."""


SamplerCheck = Callable[[int, Mapping[str, Any]], object]
"""``check(n, params)``: raise (one line) when a sampler cannot run with these settings."""


def register_sampler(
    name: str, *, defaults: Mapping[str, Any] | None = None, check: SamplerCheck | None = None
) -> Callable[[Any], Any]:
    """Decorator: register a sampler callable (function or class instance) under ``name``.

    ``defaults``: the value each option the sampler reads from ``**params`` has when it is
    not given (the defaults of its keyword parameters are read from its signature).
    ``check(n, params)``: the sampler's own check of its settings (the first thing it does),
    which a run also calls before any input is read (:func:`check_sampler`).
    """
    register: Callable[[Any], Any] = SAMPLERS.register(name, check=check, defaults=defaults)
    return register


def check_sampler(sampler: str | Sampler, n: int, params: Mapping[str, Any]) -> None:
    """ConfigError (one line) when the sampler cannot run with ``n`` and ``params``: an
    unknown sampler, n below 1, or what the sampler's own check refuses (an option it does not
    take, a bad value). A sampler registered without ``check`` has its options checked
    against those it declares (:func:`check_declared`). Called before any input is read, so
    that a bad setting is refused once, not once per clip."""
    name, fn = get_sampler(sampler)
    check: SamplerCheck | None = getattr(fn, CHECK_ATTRIBUTE, None)
    try:
        check_n(n)
        if check is not None:
            run_check(SAMPLERS.family, name, check, n, params)
        else:
            check_declared(name, fn, params)
    except SamplingError as exc:
        raise ConfigError(str(exc)) from None


_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def check_declared(name: str, fn: Callable[..., Any], params: Mapping[str, Any]) -> None:
    """The check of a sampler without a ``check`` of its own: ``params`` against the options
    it declares: its keyword parameters (but ``info``, ``clip``, ``n`` and ``source``), the
    defaults it declares for what it reads from ``**params`` (``register_sampler(name,
    defaults=...)``); ``overflow`` is one only when it declares it (the command line passes
    ``--overflow`` only when the user gives it). An option outside
    them is a one-line ConfigError (a typo is never ignored), unless the sampler takes
    ``**params`` and declares no defaults: it says nothing of what it reads, so the option
    is passed to it with a warning (once a process), naming it. A sampler that takes any
    option at all says so with a ``check`` of its own."""
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read: nothing to check against
        return
    assert sig is not None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    own = [p.name for p in list(sig.parameters.values())[2:] if p.kind in keyword]  # (info, clip)
    declared = getattr(fn, DEFAULTS_ATTRIBUTE, None) or {}
    options = [o for o in dict.fromkeys([*own, *declared]) if o not in ("n", "source")]
    unknown = tuple(sorted(k for k in params if k not in options and k not in ("n", "source")))
    if not unknown:
        return
    names = ", ".join(repr(k) for k in unknown)
    many = "s" if len(unknown) > 1 else ""
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if not takes_any or declared:
        raise ConfigError(
            f"unknown parameter{many} {names} for sampler {name!r} "
            f"(options: {', '.join(options) or 'none'})" + did_you_mean(unknown, options)
        )
    if (name, unknown) not in _WARNED:
        _WARNED.add((name, unknown))
        log.warning(
            "sampler %r declares no options: %s passed to it unchecked (a misspelt option "
            "would be ignored; its author can declare them: register_sampler(name, "
            "defaults=... or check=...))",
            name,
            f"parameter{many} {names}",
        )


def available_samplers() -> list[str]:
    """Names of the samplers that can be used here (built-ins first)."""
    return SAMPLERS.names()


def get_sampler(name_or_fn: str | Sampler) -> tuple[str, Sampler]:
    """Resolve a sampler by registry name, ``module:function`` path, or pass a callable."""
    if callable(name_or_fn):
        fn = name_or_fn
        return getattr(fn, "__name__", type(fn).__name__), fn
    if not isinstance(name_or_fn, str):
        raise ConfigError(
            "sampler must be a name, module:function or a callable, "
            f"not {type(name_or_fn).__name__}: {name_or_fn!r}"
        )
    name = name_or_fn
    if name in SAMPLERS or name in SAMPLERS.unavailable():
        return name, SAMPLERS.get(name)
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import sampler {name!r}: {exc}") from exc
        if not callable(fn):
            raise ConfigError(f"sampler {name!r} is not callable")
        return name, fn
    known = available_samplers()
    raise ConfigError(
        f"unknown sampler {name!r}; known: {', '.join(known)} (or give module:function)"
        + did_you_mean([name], known)
    )


def check_args(sampler: str, n: int, params: Mapping[str, Any], known: Iterable[str]) -> None:
    """What every built-in sampler checks first: ``n`` (:func:`check_n`), that ``params``
    holds no option it does not have (else a one-line :class:`ConfigError` naming the
    sampler, the unknown options and the options it has: a typo is never ignored), and an
    ``overflow`` policy that exists."""
    check_n(n)
    options = list(known)
    unknown = sorted(set(params) - set(options))
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ConfigError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {names} for sampler "
            f"{sampler!r} (options: {', '.join(options) or 'none'})"
            + did_you_mean(unknown, options)
        )
    policy = params.get("overflow", DEFAULT_OVERFLOW)
    if policy not in get_args(OverflowPolicy):
        raise ConfigError(
            f"overflow ({policy!r}) must be one of {', '.join(get_args(OverflowPolicy))}"
        )


def check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool):  # "8", 8.0 or True: not silently 8, 8, 1
        raise SamplingError(f"n ({n!r}) must be an integer >= 1, not {type(n).__name__}")
    if n < 1:
        raise SamplingError(f"n ({n}) must be >= 1")


def apply_overflow(
    indices: list[int], n: int, policy: OverflowPolicy, clip: ClipSpec, source_id: str
) -> list[int]:
    """Complete ``indices`` (all frames of a clip shorter than n) according to ``policy``."""
    if len(indices) >= n:
        return indices
    if policy == "error":
        raise SamplingError(
            f"{source_id}: clip has {clip.num_frames} frame(s), fewer than n={n} "
            "(use --overflow repeat_last or all)"
        )
    if policy == "all":
        return indices
    if policy == "repeat_last":
        return indices + [indices[-1]] * (n - len(indices))
    raise ConfigError(f"unknown overflow policy {policy!r}")
