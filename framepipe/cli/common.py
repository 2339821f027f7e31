"""What the commands share: logging through the progress bar, the sampling options (one
table of defaults drives both the click options and their help), and small parsers."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, get_args

import click

from framepipe.clips import CLIP_PLANNERS
from framepipe.config import SampleConfig
from framepipe.errors import ConfigError
from framepipe.registry import Registry
from framepipe.samplers.base import SAMPLERS, OverflowPolicy
from framepipe.sources.base import SOURCES

F = TypeVar("F", bound=Callable[..., Any])


class _TqdmHandler(logging.Handler):
    """Log lines printed above any progress bar, one line each: ``error: msg``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            msg = self.format(record)
            tqdm.write(msg, file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if (
            record.exc_info
            and record.levelno >= logging.ERROR
            and logging.getLogger("framepipe").isEnabledFor(logging.DEBUG)
        ):
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        if record.levelno <= logging.DEBUG:
            return f"debug: {record.name}: {msg}"
        return msg


def setup_logging(level: int) -> None:
    root = logging.getLogger("framepipe")
    for h in list(root.handlers):
        if isinstance(h, _TqdmHandler):
            root.removeHandler(h)
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(level)
    # propagation stays on: with no handler on the root logger (a plain CLI run) nothing is
    # printed twice, and an embedding application's own handlers still see our records.


def parse_kv(pairs: tuple[str, ...], option: str) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}``; values parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``: the one place it is written."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def param_default(fn: Callable[..., Any], name: str) -> Any:
    """The default of ``fn``'s keyword parameter ``name`` (a sampler's own default)."""
    return inspect.signature(fn).parameters[name].default


def stacked(decorators: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One decorator applying ``decorators`` as if stacked in this order (the first on top:
    ``--help`` lists their options in this order)."""

    def wrap(fn: Any) -> Any:
        for decorate in reversed(decorators):
            fn = decorate(fn)
        return fn

    return wrap


def kv_option(flag: str, dest: str, text: str) -> Callable[[F], F]:
    """A repeatable ``FLAG KEY=VALUE`` option (a tuple of strings in ``dest``; see
    :func:`parse_kv`)."""
    return click.option(flag, dest, multiple=True, metavar="KEY=VALUE", help=text)


def unset_option(*decls: str, text: str, default: str, **kw: Any) -> Callable[[F], F]:
    """An option that is None unless given (the library then decides); its help is ``text``
    followed by what that default is (``  [default: DEFAULT]``)."""
    return click.option(*decls, default=None, help=f"{text}  [default: {default}]", **kw)


class RegistryChoice(click.Choice):
    """A click choice among a registry's names, read when the command line is parsed (so an
    installed plug-in is a valid choice) rather than when the module is imported."""

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry
        super().__init__([], case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.registry.names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ assigns it; the registry rules
        pass


class RegistryHelpOption(click.Option):
    """An option whose help names a registry's entries (``{names}`` in ``help``), read when
    the help is shown rather than when the module is imported (so it names plug-ins)."""

    def __init__(self, *args: Any, registry: Registry[Any], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.registry = registry
        self.template = self.help or ""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self.template.format(names=", ".join(self.registry.names()))
        return super().get_help_record(ctx)


def sampling_options(fn: F) -> F:
    """The options that choose clips and frames, shared by ``sample`` and ``caption``. Their
    defaults and choices are those of :class:`SampleConfig` and of the uniform sampler (its
    signature and types); the choices of ``--kind``, ``--clips`` and the names in
    ``--sampler``'s help come from the registries."""
    from framepipe.samplers.uniform import UniformMode, uniform

    n, sampler = field_default(SampleConfig, "n"), field_default(SampleConfig, "sampler")
    opts = [
        click.option(
            "-n",
            "--num-frames",
            "n",
            type=int,
            default=n,
            show_default=True,
            help="Frames (or views) per clip.",
        ),
        click.option(
            "--sampler",
            cls=RegistryHelpOption,
            registry=SAMPLERS,
            default=sampler,
            show_default=True,
            help="Sampler: {names}, or module:function.",
        ),
        click.option(
            "--mode",
            type=click.Choice(get_args(UniformMode)),
            default=param_default(uniform, "mode"),
            show_default=True,
            help="uniform: 'centers' of n equal segments, or 'endpoints' (both ends).",
        ),
        click.option(
            "--fps",
            type=float,
            default=None,
            help="uniform: one frame every 1/FPS seconds, capped at n.",
        ),
        click.option(
            "--overflow",
            type=click.Choice(get_args(OverflowPolicy)),
            default=param_default(uniform, "overflow"),
            show_default=True,
            help="When a clip has fewer frames than n: repeat_last, all (use fewer) or error.",
        ),
        kv_option("--sampler-opt", "sampler_opts", "Extra sampler parameter (repeatable)."),
        click.option(
            "--clips",
            type=RegistryChoice(CLIP_PLANNERS),
            default=field_default(SampleConfig, "clips"),
            show_default=True,
            help="How to cut sources into clips.",
        ),
        click.option(
            "--clip-seconds",
            type=float,
            default=None,
            help="Cut videos into windows of this many seconds (implies windows).",
        ),
        click.option(
            "--stride-seconds",
            type=float,
            default=None,
            help="Start a window every this many seconds [default: clip length].",
        ),
        kv_option(
            "--clip-opt",
            "clip_opts",
            "Extra clip-planner parameter, e.g. min_shot_s=1 (repeatable).",
        ),
        kind_option(),
        source_opt_option(),
    ]
    return stacked(opts)(fn)


def kind_option() -> Callable[[F], F]:
    """``--kind``: force the kind of every input, a name from the source registry."""
    return click.option(
        "--kind",
        type=RegistryChoice(SOURCES),
        default=None,
        help="Force the input kind [default: guessed].",
    )


def source_opt_option() -> Callable[[F], F]:
    """``--source-opt KEY=VALUE`` (repeatable): options for the sources."""
    return kv_option(
        "--source-opt", "source_opts", "Extra source option, e.g. backend=pyav (repeatable)."
    )


def sample_config_from(kw: dict[str, Any]) -> SampleConfig:
    """Build a :class:`SampleConfig` from the parsed sampling options (popped from ``kw``)."""
    n = kw.pop("n")  # n < 1 is reported per clip by the sampler, as a failed record
    sampler = kw.pop("sampler")
    params: dict[str, Any] = {"overflow": kw.pop("overflow")}
    mode = kw.pop("mode")
    fps = kw.pop("fps")
    if sampler == "uniform":
        params["mode"] = mode
        if fps is not None:
            params["fps"] = fps
    elif fps is not None:
        raise ConfigError(f"--fps applies to the uniform sampler, not {sampler!r}")
    params.update(parse_kv(kw.pop("sampler_opts"), "--sampler-opt"))
    clip_seconds = kw.pop("clip_seconds")
    clips = kw.pop("clips")
    if clips == "windows" and clip_seconds is None:
        raise ConfigError("--clips windows needs --clip-seconds")
    return SampleConfig(
        n=n,
        sampler=sampler,
        sampler_params=params,
        clips=clips,
        clip_seconds=clip_seconds,
        stride_seconds=kw.pop("stride_seconds"),
        clip_params=parse_kv(kw.pop("clip_opts"), "--clip-opt"),
        kind=kw.pop("kind"),
        source_options=parse_kv(kw.pop("source_opts"), "--source-opt"),
    )


def fail(message: str) -> None:
    """Exit with a one-line error (status 2, like click's usage errors)."""
    raise click.ClickException(message)


def report_per_source(
    paths: tuple[str, ...],
    *,
    kind: str | None,
    source_options: dict[str, Any],
    describe: Callable[[Any], dict[str, Any]],
    as_json: bool,
    table: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Open each input found under ``paths`` and print one row per input: ``describe(source)``,
    or a ``failed`` row with a one-line error (printed as it happens, the others go on).
    Prints the rows as a JSON array or with ``table``; exits 1 when any input failed."""
    from framepipe.discover import discover
    from framepipe.errors import FramepipeError, one_line_error
    from framepipe.sources.base import open_source

    inputs, notes = discover(paths, kind=kind)
    for note in notes:
        click.echo(f"note: skipping {note.path}: {note.reason}", err=True)
    rows: list[dict[str, Any]] = []
    failed = 0
    for item in inputs:
        try:
            if item.error:
                raise FramepipeError(item.error)
            with open_source(item.path, item.kind, **source_options) as src:
                rows.append(describe(src))
        except Exception as exc:
            failed += 1
            msg = one_line_error(exc, item.path)
            rows.append({"source": str(item.path), "status": "failed", "error": msg})
            click.echo(f"error: {msg}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        table(rows)
    if failed:
        sys.exit(1)
