"""One small registry type for every plug-in family (source kinds, samplers, clip planners).

A :class:`Registry` maps a name to an object. Built-ins are imported lazily, on the first
lookup, from the modules that define them; a built-in whose module cannot be imported (a
missing optional library) is *unavailable*, with the reason, instead of breaking
``import framepipe``. Third-party plug-ins register themselves with :meth:`Registry.register`
when their module is imported, or are found through the package entry-point group named
after the family (``framepipe.samplers``, ``framepipe.sources``, ``framepipe.clip_planners``),
so an installed plug-in is selectable from the command line without any import by the user.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from framepipe.errors import ConfigError, FramepipeError, did_you_mean, one_line_error

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULTS_ATTRIBUTE = "framepipe_defaults"
"""Where a plug-in's registration (:meth:`Registry.register`) keeps the defaults it
declares for the options it reads from ``**params``."""
CHECK_ATTRIBUTE = "framepipe_check"
"""Where a plug-in's registration keeps its own check of its settings."""

_IN_WORKER = False


def in_worker() -> None:
    """Called by a worker process of a run (a decoder, a Ray actor): what the run's own
    process says of the plug-ins (one ignored for its built-in name) is said here at DEBUG
    only, not once more per worker."""
    global _IN_WORKER
    _IN_WORKER = True


class Registry(Generic[T]):
    """Name -> object for one plug-in family.

    ``family`` names it in messages (``"sampler"``); ``builtins`` maps each built-in name to
    the module that registers it; ``entry_point_group`` is where installed plug-ins are
    looked up (None: no entry points).
    """

    def __init__(
        self,
        family: str,
        builtins: Mapping[str, str] | None = None,
        *,
        entry_point_group: str | None = None,
    ) -> None:
        self.family = family
        self._builtins = dict(builtins or {})
        self._group = entry_point_group
        self._items: dict[str, T] = {}
        self._unavailable: dict[str, str] = {}
        self._loaded = False

    # -- registering ---------------------------------------------------------------------------
    def register(
        self,
        name: str,
        obj: T | None = None,
        *,
        check: Callable[..., object] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does so.
        ``check``: the plug-in's own check of its settings, ``defaults``: those of the options
        it reads from ``**params`` (kept on it, as :data:`CHECK_ATTRIBUTE` and
        :data:`DEFAULTS_ATTRIBUTE`)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.family} needs a non-empty name, got {name!r}")

        def deco(o: T) -> T:
            self._refuse_builtin_name(name, o)
            if defaults is not None:
                setattr(o, DEFAULTS_ATTRIBUTE, dict(defaults))
            if check is not None:
                setattr(o, CHECK_ATTRIBUTE, check)
            self._items[name] = o
            self._unavailable.pop(name, None)
            return o

        return deco if obj is None else deco(obj)

    def _refuse_builtin_name(self, name: str, obj: object) -> None:
        """A one-line ConfigError when ``name`` is a built-in's and ``obj`` is not that
        built-in: a plug-in never replaces a built-in (silently, everywhere: the default
        sampler too), nor is itself replaced when the built-in's module is imported later.
        The built-in's own module registers it while it is being imported."""
        module = self._builtins.get(name)
        if module is None:
            return
        if module not in sys.modules:  # the built-in registers itself first
            self._load_builtin(module)
        current = self._items.get(name, obj)
        if current is not obj or name in self._unavailable:
            raise ConfigError(
                f"{self.family} {name!r} is built into framepipe; register yours under another name"
            )

    def mark_unavailable(self, name: str, reason: str) -> None:
        """Record that ``name`` exists but cannot be used here (e.g. a missing library)."""
        if name not in self._items:
            self._unavailable[name] = reason

    # -- looking up ----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in dict.fromkeys(self._builtins.values()):
            self._load_builtin(module)
        if self._group:
            self._load_entry_points(self._group)

    def _load_builtin(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # that module's names are unavailable, with the reason
            log.debug("%s module %s unavailable: %s", self.family, module, exc)
            for name, mod in self._builtins.items():
                if mod == module:
                    self.mark_unavailable(name, str(exc))

    def _load_entry_points(self, group: str) -> None:
        from importlib.metadata import entry_points

        try:
            eps = list(entry_points(group=group))
        except Exception as exc:  # a broken installation must not break the built-ins
            log.warning("cannot list the %s plug-ins (%s)", self.family, exc)
            return
        for ep in eps:
            if ep.name in self._builtins:  # said once, by the run's own process
                log.log(
                    logging.DEBUG if _IN_WORKER else logging.WARNING,
                    "%s plug-in %r (%s) is ignored: %r is a built-in %s; its package must "
                    "name it otherwise",
                    self.family,
                    ep.name,
                    ep.value,
                    ep.name,
                    self.family,
                )
                continue
            if ep.name in self._items:
                continue
            try:
                self._items[ep.name] = ep.load()
            except Exception as exc:
                self.mark_unavailable(ep.name, f"plug-in {ep.value} failed to load ({exc})")

    def get(self, name: str) -> T:
        """The object registered as ``name``; ConfigError (one line) when unknown or
        unavailable here, with the reason or the known names. A built-in imports only its
        own module (a command that opens videos pays nothing for 3D models)."""
        if name not in self._items and name in self._builtins and not self._loaded:
            self._load_builtin(self._builtins[name])
        if name not in self._items:
            self._load()
        if name in self._items:
            return self._items[name]
        if name in self._unavailable:
            raise ConfigError(f"{self.family} {name!r} is unavailable: {self._unavailable[name]}")
        known = self.names()
        raise ConfigError(
            f"unknown {self.family} {name!r}; known: {', '.join(known)}"
            + did_you_mean([name], known)
        )

    def has(self, name: str) -> bool:
        """Whether ``name`` can be used here; a built-in is checked by importing its own
        module only (no plug-in listing)."""
        try:
            self.get(name)
        except ConfigError:
            return False
        return True

    def names(self) -> list[str]:
        """Available names, built-ins first in their declared order, then plug-ins."""
        self._load()
        order = {n: k for k, n in enumerate(self._builtins)}
        return sorted(self._items, key=lambda n: (order.get(n, len(order)), n))

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

    def unavailable(self) -> dict[str, str]:
        """Names that exist but cannot be used here, with the reason."""
        self._load()
        return dict(self._unavailable)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {len(self._items)} registered)"


def run_check(family: str, name: str, check: Callable[..., object], *args: Any, **kw: Any) -> None:
    """Call plug-in ``name``'s check of its settings (``check(*args, **kw)``). It refuses
    with ConfigError, which passes as it is (so do framepipe's other errors); anything else
    it raises (a ValueError, a KeyError of an option it looked up) is the same refusal in
    another type: one line, a ConfigError naming the plug-in, never a traceback."""
    try:
        check(*args, **kw)
    except FramepipeError:
        raise
    except Exception as exc:
        raise ConfigError(f"{family} {name!r} refused its settings: {one_line_error(exc)}") from exc


def option_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """The options of the plug-in ``fn`` (a sampler, a clip planner) that have a known
    default, with that default: those of its keyword parameters (but ``n`` and ``source``)
    and those it declares (``defaults=`` where it is registered)."""
    try:
        out = dict(_signature_defaults(fn))
    except TypeError:  # an unhashable callable: read its signature every time
        out = dict(_signature_defaults.__wrapped__(fn))
    out.update(getattr(fn, DEFAULTS_ATTRIBUTE, None) or {})
    return out


@functools.lru_cache(maxsize=64)
def _signature_defaults(fn: Callable[..., Any]) -> tuple[tuple[str, Any], ...]:
    """The keyword parameters of ``fn`` with a default: read once per plug-in (every
    input's resume keys ask; ``inspect.signature`` costs more than the rest of a key)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or an odd callable: no signature to read
        return ()
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(
        (p.name, p.default)
        for p in sig.parameters.values()
        if p.kind in keyword and p.default is not p.empty and p.name not in ("n", "source")
    )


def canonical_params(fn: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the options given at their default (:func:`option_defaults`):
    what the resume keys are made of. Values are compared as values (a list equals a tuple,
    2 equals 2.0, True is not 1); one written another way (a size as ``"64x36"``) is
    another setting."""
    defaults = option_defaults(fn)
    return {k: v for k, v in params.items() if k not in defaults or not _same(v, defaults[k])}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return bool(a == b)
    except Exception:  # an odd value that cannot be compared: another setting
        return False
