"""Option declarations as tables: one row per option, ``(flags, type, default, help)`` with an
optional fifth item of click keywords, made into click options by :func:`options`.

- ``flags``: ``"-o --output"`` (click's ``"--x/--no-x"`` for an on/off flag).
- ``type``: a click type or a Python one; ``bool`` is a flag; :data:`KV` a repeatable
  ``KEY=VALUE``; a ``Literal`` or a tuple of strings a choice; a :class:`Registry` a choice
  among its names, read when the command line is parsed (so a plug-in is a choice), or, when
  the help has ``{names}``, free text whose help names them.
- ``default``: shown in ``--help``; None: none; :class:`Unset`: None, the library then
  decides, and the help says what it does.
- keywords: click's (``dest``, ``multiple``, ``metavar``, ``required`` ...) and ``old``: old
  spellings, hidden, whose values go to this option with a deprecation note.

The rows every command may take are here; those shared by ``sample`` and ``caption`` are in
:mod:`framepipe.cli.run_options` (so that a command such as ``shots`` imports no engine);
each command's own are in its module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import click

from framepipe.cli.common import OldSpelling
from framepipe.errors import did_you_mean
from framepipe.registry import Registry
from framepipe.sources.base import SOURCES

KV = "KEY=VALUE"
"""The type of a repeatable ``KEY=VALUE`` option (a tuple of strings; see :func:`parse_kv`)."""


@dataclass(frozen=True)
class Unset:
    """A default of None (the option is not passed on: the library decides); ``text`` says
    what it then is."""

    text: object


Row = tuple[Any, ...]


class NearChoice(click.Choice):
    """click's choice, whose refusal of a mistyped value names the choice near it
    (``--clips shot``: ``Did you mean 'shots'?``), as a mistyped command's does."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:  # click's refusal, then the guess (on every click the requirements allow)
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            near = did_you_mean([value], self.choices, after="") if isinstance(value, str) else ""
            if not near or near in exc.message:
                raise
            self.fail(exc.message.rstrip() + near, param, ctx)


class RegistryChoice(NearChoice):
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

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and self.registry.has(value):
            return value  # a built-in costs its own module only, not every plug-in's
        return super().convert(value, param, ctx)


class LateHelpOption(click.Option):
    """An option whose help is filled in when it is shown (``help.format(**fill())``), not
    when the module is imported: e.g. a registry's entries, plug-ins included."""

    def __init__(self, *args: Any, fill: Callable[[], dict[str, str]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fill = fill
        self.template = self.help or ""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self.template.format(**self.fill())
        return super().get_help_record(ctx)


class OutputPath(click.Path):
    """A records file (not a folder), or a folder of part files: a path ending with ``/``, or
    a folder that holds part files already."""

    name = "output"

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=str)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from framepipe.output.store import is_folder_output  # (``shots`` writes no records)

        if isinstance(value, str) and is_folder_output(value):
            return value
        if isinstance(value, str) and os.path.isdir(value):  # no part files: say how to mean one
            self.fail(
                f"{value!r} is a directory; end it with '/' for a folder of part files: {value}/",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


class FormatChoice(NearChoice):
    """``jsonl`` or ``parquet``; ``old`` values are taken too (not shown): an old meaning of
    the option that the command moves elsewhere, with a note."""

    def __init__(self, old: Sequence[str] = ()) -> None:
        super().__init__([])
        self.old = tuple(old)

    @property
    def choices(self) -> tuple[str, ...]:
        from framepipe.output.store import FORMATS  # when asked (``shots`` writes no records)

        return FORMATS

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ assigns it
        pass

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if value in self.old else super().convert(value, param, ctx)


def option(row: Row) -> Callable[[Any], Any]:
    """The click option of one table row (see the module)."""
    flags, typ, default, text, *more = row
    kw: dict[str, Any] = dict(more[0]) if more else {}
    decls = flags.split()
    old: tuple[str, ...] = tuple(kw.pop("old", ()))
    dest = kw.pop("dest", None)
    if isinstance(typ, Registry):
        if "{names}" in text:
            kw.update(cls=LateHelpOption, fill=lambda r=typ: {"names": ", ".join(r.names())})
        else:
            kw["type"] = RegistryChoice(typ)
    elif typ is bool:
        kw["is_flag"] = True
    elif typ == KV:
        kw.update(multiple=True, metavar=KV)
    elif get_origin(typ) is Literal or isinstance(typ, (tuple, list)):
        kw["type"] = NearChoice(get_args(typ) if get_origin(typ) is Literal else typ)
    elif typ is not None:
        kw["type"] = typ
    if isinstance(default, Unset):
        text = f"{text}  [default: {default.text}]"
    elif default is not None:
        kw.update(default=default, show_default=True)
    if old and kw.pop("required", False):
        text = f"{text}  [required]"  # asked for once the old spellings are in
        kw["cls"] = _Required
    name = dest or max(decls, key=len).split("/")[0].lstrip("-").replace("-", "_")
    made = click.option(*decls, *([dest] if dest else []), help=text, **kw)
    if not old:
        return made
    use = "/".join(d for d in decls if d.startswith("-"))
    alias_kw = {k: v for k, v in kw.items() if k in ("type", "is_flag", "multiple", "metavar")}

    def with_old(fn: Any) -> Any:
        for k, spelling in enumerate(old):
            alias = f"old_{name}_{k}"
            fn = click.option(spelling, alias, cls=OldSpelling, new=name, use=use, **alias_kw)(fn)
        return made(fn)

    return with_old


class _Required(click.Option):
    required_after_spellings = True


def options(*tables: Sequence[Row | Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One decorator with the options of ``tables`` (rows, or click decorators such as an
    argument), in their order in ``--help``."""
    decorators = [r if callable(r) else option(r) for t in tables for r in t]

    def wrap(fn: Any) -> Any:
        for decorate in reversed(decorators):
            fn = decorate(fn)
        return fn

    return wrap


KIND: Row = ("--kind", SOURCES, Unset("guessed"), "Force the input kind.")
KV_VALUES = "repeatable; values parsed as JSON when they can be: a number, true, a list"
"""What every ``KEY=VALUE`` option's help says of its values (see ``parse_kv``)."""
SOURCE_OPT: Row = (
    "--source-opt",
    KV,
    None,
    "Option of the inputs' kind, e.g. backend=decord (video), max_side=1024 (scenes) or "
    f"background=[0,0,0] (all kinds); one no kind takes is refused ({KV_VALUES}).",
)
FORMAT_TEXT = "Format of the records: jsonl or parquet (needs pyarrow)."
FORMAT: Row = ("--format", FormatChoice(), Unset("from the file's suffix, else jsonl"), FORMAT_TEXT)
RETRY: Row = (
    "--retry-failed/--no-retry-failed",
    bool,
    True,
    "Try failed clips again on a re-run (their new records replace the old ones); with "
    "--no-retry-failed a failed record counts as done and is kept.",
)
