"""The ``framepipe`` command line: click commands that parse options into a config object
and call the same Python API a user would. One module per command."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import sys

import click

from framepipe.cli.common import Group, OldSpelling, examples, setup_logging
from framepipe.version import __version__

# command name -> module that defines it (imported lazily so `--help` stays fast)
_COMMANDS: dict[str, str] = {
    "info": "framepipe.cli.info",
    "sample": "framepipe.cli.sample",
    "caption": "framepipe.cli.caption",
    "make-tiny-model": "framepipe.cli.tiny",
    "shots": "framepipe.cli.shots",
    "report": "framepipe.cli.report",
    "merge": "framepipe.cli.merge",
}


class _LazyGroup(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*(n for n in _COMMANDS if self._module_exists(n)), "help"])

    @staticmethod
    def _module_exists(name: str) -> bool:
        return importlib.util.find_spec(_COMMANDS[name]) is not None

    def no_such_command(self, ctx: click.Context, name: str) -> click.UsageError:
        """The refusal of an unknown command, with the commands whose names are near it
        (``sampel``: ``sample``)."""
        near = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        return click.UsageError(f"No such command {name!r}.{hint}", ctx)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        unknown = not name.startswith("-") and self.get_command(ctx, name) is None
        if unknown and not ctx.resilient_parsing:
            raise self.no_such_command(ctx, name)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "help":
            return _help
        if name not in _COMMANDS or not self._module_exists(name):
            return None
        mod = importlib.import_module(_COMMANDS[name])
        cmd = mod.command
        assert isinstance(cmd, click.Command)
        return cmd


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "framepipe info video.mp4",
        "framepipe sample videos/ -n 8 -o out/",
        'framepipe caption videos/ -n 8 -q "What happens?" -o results.jsonl',
        "framepipe report results.jsonl",
        "framepipe help caption",
    ),
)
@click.version_option(__version__, prog_name="framepipe")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--quiet",
    is_flag=True,
    help="Only errors on stderr: no notes, warnings, summaries or progress bars. What a "
    "command prints on stdout is its output and stays (info's and shots' tables or JSON, "
    "make-tiny-model's line).",
)
@click.option("-q", "old_quiet", cls=OldSpelling, is_flag=True, new="quiet", use="--quiet")
def cli(verbose: int, quiet: bool) -> None:
    """Turn videos, multi-view image sets and 3D models into n well-chosen frames, and ask a
    multi-image vision-language model about each clip.

    Every command that writes records or a page takes -o/--output (make-tiny-model takes
    its folder as OUT_DIR), and --format jsonl|parquet where it writes records; a bad
    setting, or an option that does not apply (a Ray option without --engine ray), is
    refused before any work (exit status 2)."""

    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    setup_logging(level)


@click.command("help", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("command_name", metavar="[COMMAND]", required=False)
@click.pass_context
def _help(ctx: click.Context, command_name: str | None) -> None:
    """Show the help of framepipe, or of COMMAND (the same as COMMAND --help)."""
    top = ctx.find_root()
    if command_name is None:
        click.echo(top.get_help())
        return
    group = top.command
    assert isinstance(group, _LazyGroup)
    cmd = group.get_command(top, command_name)
    if cmd is None:
        raise group.no_such_command(top, command_name)
    click.echo(cmd.get_help(click.Context(cmd, info_name=command_name, parent=top)))


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="framepipe")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
