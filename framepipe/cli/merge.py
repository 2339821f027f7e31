"""``framepipe merge INPUTS... -o OUT``: one output from part files, shard outputs and plain
outputs, one record per clip (the latest wins)."""

from __future__ import annotations

import click

from framepipe.cli.output_options import format_option
from framepipe.errors import FramepipeError


@click.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=str))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="The merged records file (.jsonl or .parquet); it may be one of the INPUTS.",
)
@format_option()
def command(inputs: tuple[str, ...], output: str, records_format: str | None) -> None:
    """Merge records files into OUTPUT, one record per clip: where several records have the
    same resume key, the latest written wins (files in modification-time order, records in
    file order) but a failed record never replaces an ok one, and a failure of a whole input
    goes once its clips have records.

    INPUTS are records files (JSONL or Parquet), folders of part files (part-*.jsonl,
    part-*.parquet) and `framepipe sample` output folders (manifest.jsonl). Relative frame
    paths are rewritten to stay right from OUTPUT's folder. OUTPUT is written to a temporary
    file beside it and moved into place, so a failed merge leaves it as it was.
    """
    from framepipe.output import merge

    try:
        res = merge(inputs, output, records_format)
    except FramepipeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{res.records} record(s) from {res.files} file(s) -> {res.output} "
        f"({res.dropped} superseded)",
        err=True,
    )
