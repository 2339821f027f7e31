"""What the commands share: logging through the progress bar, the command class (old
spellings, optional extras and framepipe's errors, the same for every command; usage errors
as one line), and the per-source report of ``info`` and ``shots``. A run's progress bar is
in :mod:`framepipe.cli.progress`."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click
from click.core import ParameterSource

from framepipe.errors import (
    AlreadyThereError,
    ConfigError,
    FramepipeError,
    MissingDependencyError,
    near_name,
)
from framepipe.extras import AFTER_THE_DEVICE, check_extras
from framepipe.utils import shown_text, without_secrets


class _TqdmHandler(logging.Handler):
    """Log lines printed above any progress bar, one line each: ``error: msg``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            msg = self.format(record)
            tqdm.write(msg, file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


AS_IS = "framepipe_as_is"
"""The attribute of a log record printed as it is, without a level prefix (:func:`note`)."""


class _Formatter(logging.Formatter):
    """``error: msg``, ``warning: msg``; a name that is not UTF-8 shown as the HTML report
    shows it (``bad\\xff.mp4``: :func:`~framepipe.utils.shown_text`), a URL's query values
    and password hidden (a signed URL's token: :func:`~framepipe.utils.without_secrets`)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = shown_text(without_secrets(record.getMessage()))
        if getattr(record, AS_IS, False):
            return msg
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


_log = logging.getLogger("framepipe.cli")


def cell_text(value: object) -> str:
    """``value`` as text for one cell of a table printed on a terminal: as
    :func:`~framepipe.utils.shown_text` shows it, its control characters (a line break,
    a terminal escape in a file name) as backslash escapes (``\\n``, ``\\x1b``), so that a
    row stays one line and a name cannot colour or move the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], shown_text(str(value)))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def note(text: str) -> None:
    """A line for the user on stderr, above any progress bar, as it is: a note, a warning
    or a command's summary. It is a WARNING-level record of the ``framepipe.cli`` logger, so
    the one switch that governs the library's log lines governs it too: ``--quiet`` (level
    ERROR) leaves it out."""
    _log.warning("%s", text, extra={AS_IS: True})


def chatty() -> bool:
    """Whether notes, summaries and progress bars are shown (not ``--quiet``)."""
    return _log.isEnabledFor(logging.WARNING)


def deprecated(old: str, use: str) -> None:
    """The note that an old spelling ``old`` goes in the next release (use ``use``)."""
    note(f"warning: {old} is deprecated and goes in the next release: use {use}")


def parse_kv(pairs: Sequence[str], option: str) -> dict[str, Any]:
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


# -- the command class ----------------------------------------------------------------------
class OldSpelling(click.Option):
    """A hidden option that is an old spelling of another (``new``, its destination): its
    value goes there, with a note that it goes in the next release (use ``use``)."""

    def __init__(self, decls: list[str], *, new: str, use: str, **kw: Any) -> None:
        super().__init__(decls, hidden=True, **kw)
        self.new = new
        self.use = use


class SettingError(click.ClickException):
    """A setting refused before any work (a bad value, a missing extra): one line, exit 2."""

    exit_code = 2


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (on the command line or in its environment
    variable), not left it at its default."""
    source = ctx.get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def flag(ctx: click.Context, name: str) -> str:
    """The flag the user knows option ``name`` by (its first: ``-n``, ``--fps``)."""
    p = next((p for p in ctx.command.params if p.name == name), None)
    return p.opts[0] if isinstance(p, click.Option) else name


def both_given(old: str, new: str) -> SettingError:
    """The refusal of an old spelling given with its new one (which should win is a guess)."""
    return SettingError(f"{old} and {new} are the same option, given twice: give {new} only")


def named_by_flag(ctx: click.Context, msg: str) -> str:
    """A library message about a setting (``n (0) must be >= 1``: the Python API's names)
    with the setting named by the flag the user gave it with (``-n (0) ...``)."""
    name, sep, rest = msg.partition(" (")
    return f"{flag(ctx, name)} ({rest}" if sep and name.isidentifier() and given(ctx, name) else msg


def spelled_option(typed: str, params: list[click.Parameter]) -> str | None:
    """The option that ``typed`` spells another way: underscores for dashes
    (``--num_frames``), or a short flag written long (``--n`` for ``-n``); its long name."""
    for p in params:
        if not isinstance(p, click.Option) or p.hidden:
            continue
        long = max(p.opts, key=len)
        if typed.replace("_", "-") in p.opts or (
            typed.startswith("--") and len(typed) == 3 and typed[1:] in p.opts
        ):
            return long
    return None


def _top_level(ctx: click.Context, typed: str) -> str | None:
    """The option of ``framepipe`` itself (``--quiet``, ``-v``) that ``typed``, unknown to
    ``ctx``'s command, is or spells nearly (``--quite``), given after the command name."""
    root = ctx.find_root()
    if root is ctx:
        return None
    own = [
        o
        for p in root.command.params
        if isinstance(p, click.Option) and p.expose_value and not p.hidden
        for o in p.opts
    ]
    if typed in own:
        return typed
    return near_name(typed, [o for o in own if o.startswith("--")], cutoff=0.8)


class _Spellings:
    """Parsing that moves the values of old spellings to their new options (with a note;
    both given: refused), then asks for the options that are required but have old
    spellings (click cannot)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        params: list[click.Parameter] = self.params  # type: ignore[attr-defined]
        try:
            rest: list[str] = super().parse_args(ctx, args)  # type: ignore[misc]
        except click.NoSuchOption as exc:
            meant = spelled_option(exc.option_name, params)
            top = _top_level(ctx, exc.option_name)
            if meant is None and top is not None:
                said = "it is" if top == exc.option_name else f"did you mean {top!r}? It is"
                msg = (
                    f"No such option {exc.option_name!r}: {said} framepipe's own, given "
                    f"before the command: framepipe {top} {ctx.info_name} ..."
                )
                raise click.NoSuchOption(exc.option_name, msg, ctx=ctx) from None
            if meant is None:
                hidden = {o for p in params if getattr(p, "hidden", False) for o in p.opts}
                near = [o for o in exc.possibilities or () if o not in hidden]
                if near == list(exc.possibilities or ()):
                    raise
                # an old spelling (hidden: ``--out``) is never offered as what was meant
                raise click.NoSuchOption(exc.option_name, possibilities=near, ctx=ctx) from None
            msg = f"No such option {exc.option_name!r}. Did you mean {meant!r}?"
            raise click.NoSuchOption(exc.option_name, msg, ctx=ctx) from None
        for p in params:
            if isinstance(p, OldSpelling):
                value = ctx.params.pop(p.name or "", None)
                if value not in (None, False, ()):
                    if given(ctx, p.new):
                        raise both_given(p.opts[0], p.use)
                    deprecated(p.opts[0], p.use)
                    ctx.params[p.new] = value
                    ctx.set_parameter_source(p.new, ParameterSource.COMMANDLINE)
        for p in params:
            if getattr(p, "required_after_spellings", False) and ctx.params.get(p.name) is None:
                raise click.MissingParameter(ctx=ctx, param=p)
        return rest


def examples(*lines: str) -> str:
    """A command's ``Examples:`` for the end of its ``--help`` (click's epilog), each
    command line kept as written (not rewrapped)."""
    return "\n".join(["Examples:", "", "\b", *(f"  {line}" for line in lines)])


class Command(_Spellings, click.Command):
    """A framepipe command: old spellings merged into their options (:class:`OldSpelling`),
    the options that need an optional extra checked before it runs
    (:func:`framepipe.extras.check_extras`), and framepipe's errors as one line: a setting
    refused before any work (ConfigError, MissingDependencyError) exits with status 2,
    another error (a model that will not load, an output that cannot be written) with 1,
    Ctrl-C with 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            check_extras({k: v for k, v in ctx.params.items() if k not in AFTER_THE_DEVICE})
            return super().invoke(ctx)
        except (ConfigError, MissingDependencyError) as exc:
            raise SettingError(named_by_flag(ctx, shown_text(str(exc)))) from None
        except AlreadyThereError as exc:
            msg = f"{exc.path}: {exc.what} is already there (pass --overwrite to replace it)"
            raise click.ClickException(shown_text(msg)) from None
        except FramepipeError as exc:
            raise click.ClickException(shown_text(str(exc))) from None
        except KeyboardInterrupt:  # a run says more (run_with_progress); 1 is "inputs failed"
            # in a terminal, a line of its own after its ^C (as click does)
            click.echo("\ninterrupted" if sys.stderr.isatty() else "interrupted", err=True)
            sys.exit(130)


class Group(_Spellings, click.Group):
    """The ``framepipe`` group: old spellings of its own options merged too. Its own
    options are parsed at the default verbosity (their notes shown); its callback then sets
    the one chosen (``-v``, ``--quiet``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        setup_logging(logging.WARNING)
        return super().parse_args(ctx, args)

    # A usage error (a bad value click's own parsing refuses, a missing option, an unknown
    # command) is one line, ``Error: ...``, as framepipe's own refusals are: without its
    # context click would not print the usage and the help hint above it.
    def make_context(self, *args: Any, **kw: Any) -> click.Context:
        with one_line_usage_errors():
            return super().make_context(*args, **kw)

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_usage_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """Click's usage errors raised inside, printed as their ``Error:`` line alone."""
    try:
        yield
    except click.UsageError as exc:
        exc.ctx = None
        raise


# -- info and shots: one row per source -----------------------------------------------------
def report_per_source(
    paths: tuple[str, ...],
    *,
    kind: str | None,
    source_options: dict[str, Any],
    describe: Callable[[Any, str], dict[str, Any]],
    as_json: bool,
    table: Callable[[list[dict[str, Any]]], None],
    table_each: bool = False,
) -> None:
    """Open each input found under ``paths`` and print one row per input: ``describe(source,
    name)`` (``name``: the path, or the URI of a remote input, which is downloaded to the
    cache first, as a run does), or a ``failed`` row with a one-line error naming it (printed
    as it happens, the others go on). Prints the rows as a JSON array or with ``table``
    (``table_each``: called with each row as soon as it is done, so a long folder's first
    inputs show at once and an interrupted command keeps them; else once, with all rows);
    exits 1 when any input failed. The source options are checked against the kinds found
    before any input is opened."""
    from framepipe.errors import one_line_error
    from framepipe.inputs import collect_inputs, possible_kinds, staged_kind
    from framepipe.inputs.remote import stage
    from framepipe.read_clips import named_by_uri
    from framepipe.sources.base import check_source_options, open_source

    check_source_options(source_options, [kind] if kind else None)
    # remote URIs' schemes' extras checked before any work; file:// URIs are local paths
    found, notes = collect_inputs(list(paths), kind=kind)
    inputs = list(found)  # (a list already: paths, no manifest)
    kinds = [k for i in inputs if not i.error for k in possible_kinds(i, kind)]
    check_source_options(source_options, kinds)
    for n in notes:
        note(f"note: skipping {n.path}: {n.reason}")
    rows: list[dict[str, Any]] = []
    failed = 0
    for item in inputs:
        try:
            if item.error:
                raise FramepipeError(item.error)
            local = stage(item.uri, item.path) if item.uri else item.path
            with open_source(local, staged_kind(item, local, kind), **source_options) as src:
                rows.append(describe(src, item.source))
        except Exception as exc:
            failed += 1
            msg = one_line_error(exc, item.source)
            if item.uri:  # never the cached copy
                msg = named_by_uri(msg, item)
            rows.append({"source": item.source, "status": "failed", "error": msg})
            click.echo(f"error: {shown_text(without_secrets(msg))}", err=True)
        if table_each and not as_json:
            table(rows[-1:])
    if as_json:  # a name that is not UTF-8 as the records keep it (``\\udcff``)
        text = json.dumps(rows, indent=2, ensure_ascii=False)
        if shown_text(text) != text:
            text = json.dumps(rows, indent=2, ensure_ascii=True)
        click.echo(text)
    elif not table_each:
        table(rows)
    if failed:
        sys.exit(1)
