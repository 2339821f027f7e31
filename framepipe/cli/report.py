"""``framepipe report RESULTS.jsonl... -o report.html``: a browsable HTML page of the records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from framepipe.cli.common import Command, note
from framepipe.cli.options import Unset, options

# fmt: off
ROWS: list[Any] = [
    click.argument(
        "records", nargs=-1, required=True, type=click.Path(path_type=str)
    ),  # local files are checked by the library (a URI names an object in a store)
    ("-o --output", click.Path(dir_okay=False, path_type=Path),
     Unset("report.html next to the first records file"), "HTML file to write.",
     {"old": ("--out",)}),
    ("--base-dir", click.Path(file_okay=False, path_type=Path),
     Unset("each JSONL file's folder"), "Folder the records' frame paths are relative to."),
    ("--embed", bool, None,
     "Inline small JPEG thumbnails (data: URIs) so the file stands alone and can be mailed."),
    ("--no-thumbnails", bool, None,
     "Show each clip's contact sheet instead of its frames one by one."),
    ("--title", str, "framepipe report", "Page title."),
]
# fmt: on


@click.command("report", cls=Command)
@options(ROWS)
def command(
    records: tuple[str, ...],
    output: Path | None,
    base_dir: Path | None,
    embed: bool,
    no_thumbnails: bool,
    title: str,
) -> None:
    """Write one self-contained HTML page for the records in RECORDS (JSONL files written by
    'framepipe sample' or 'framepipe caption', or 'sample' output folders): a summary,
    filters, and one card per clip with its frames, questions and answers, or its error."""
    from framepipe.inputs.remote import is_remote
    from framepipe.report import write_report

    if output is None and is_remote(records[0]):
        output = Path("report.html")  # a store's output: the page is written here
    elif output is None:
        first = Path(records[0])
        output = (first if first.is_dir() else first.parent) / "report.html"
    path = write_report(
        records, output, base_dir=base_dir, thumbnails=not no_thumbnails, embed=embed, title=title
    )
    note(f"report -> {path}")
