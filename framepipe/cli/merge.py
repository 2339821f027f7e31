"""``framepipe merge INPUTS... -o OUT``: one output from part files, shard outputs and plain
outputs, one record per clip (the latest wins)."""

from __future__ import annotations

from typing import Any

import click

from framepipe.cli.common import Command, examples, note
from framepipe.cli.options import FORMAT, options

# fmt: off
ROWS: list[Any] = [
    click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=str)),
    ("-o --output", click.Path(dir_okay=False, path_type=str), None,
     "The merged records file (.jsonl or .parquet); it may be one of the INPUTS.",
     {"required": True}),
    FORMAT,
]
# fmt: on


@click.command(
    "merge",
    cls=Command,
    epilog=examples(
        "framepipe merge results/ -o results.jsonl",
        "framepipe merge results.jsonl -o results.parquet",
    ),
)
@options(ROWS)
def command(inputs: tuple[str, ...], output: str, format: str | None) -> None:
    """Merge records files into OUTPUT, one record per clip: where several records have the
    same resume key, the latest written wins (files in modification-time order, records in
    file order) but a failed record never replaces an ok one, and a failure of a whole input
    goes once its clips have records.

    INPUTS are records files (JSONL or Parquet), folders of part files (part-*.jsonl,
    part-*.parquet) and 'framepipe sample' output folders (manifest.jsonl). Relative frame
    paths are rewritten to stay right from OUTPUT's folder. OUTPUT is written to a temporary
    file beside it and moved into place, so a failed merge leaves it as it was. Inputs
    with no record at all are an error (exit status 1).
    """
    from framepipe.extras import check_extras
    from framepipe.output import format_of, merge

    check_extras(format=format_of(output, format))  # before any input is read
    res = merge(inputs, output, format)  # inputs without a record: an error, nothing written
    note(
        f"{res.records} record(s) from {res.files} file(s) -> {res.output} "
        f"({res.dropped} superseded)"
    )
