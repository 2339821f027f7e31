"""``framepipe info PATH...``: each source's metadata, as a table or JSON."""

from __future__ import annotations

import json
import sys

import click

from framepipe.discover import discover
from framepipe.errors import FramepipeError
from framepipe.sources.base import open_source
from framepipe.types import one_line_error


@click.command("info")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source, as a list.")
@click.option(
    "--kind",
    type=click.Choice(["video", "multiview", "render"]),
    default=None,
    help="Force the input kind [default: guessed].",
)
@click.option(
    "--source-opt",
    "source_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra source option, e.g. backend=pyav (repeatable).",
)
def command(
    paths: tuple[str, ...], as_json: bool, kind: str | None, source_opts: tuple[str, ...]
) -> None:
    """Print each source's metadata: frames, fps, duration, size, keyframes, views."""
    from framepipe.cli.common import parse_kv

    options = parse_kv(source_opts, "--source-opt")
    inputs, notes = discover(paths, kind=kind)
    for note in notes:
        click.echo(f"note: skipping {note.path}: {note.reason}", err=True)
    rows: list[dict[str, object]] = []
    failed = 0
    for item in inputs:
        try:
            if item.error:
                raise FramepipeError(item.error)
            with open_source(item.path, item.kind, **options) as src:
                rows.append(src.info().to_json())
        except Exception as exc:
            failed += 1
            msg = one_line_error(exc, item.path)
            rows.append({"source": str(item.path), "status": "failed", "error": msg})
            click.echo(f"error: {msg}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        _table(rows)
    if failed:
        sys.exit(1)


def _table(rows: list[dict[str, object]]) -> None:
    cols = [
        "source",
        "kind",
        "num_frames",
        "fps",
        "duration_s",
        "width",
        "height",
        "num_keyframes",
        "num_views",
        "backend",
    ]
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return

    def cell(r: dict[str, object], c: str) -> str:
        v = r.get(c)
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    table = [cols] + [[cell(r, c) for c in cols] for r in ok]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
