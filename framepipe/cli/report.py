"""``framepipe report RESULTS.jsonl... -o report.html``: a browsable HTML page of the records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from framepipe.cli.common import Command, examples, note
from framepipe.cli.options import Unset, options
from framepipe.report.write import PAGE_SIZE

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
    ("--page-size", click.IntRange(min=0), PAGE_SIZE,
     "Clips per page (failed ones first); the first page has the summary, the commonest "
     "errors and links to the others (REPORT-2.html ...). 0: all on one page."),
]
# fmt: on


@click.command(
    "report",
    cls=Command,
    epilog=examples(
        "framepipe report out/",
        "framepipe report results.jsonl -o site/report.html",
        "framepipe report results.jsonl --embed -o mail.html",
    ),
)
@options(ROWS)
def command(
    records: tuple[str, ...],
    output: Path | None,
    base_dir: Path | None,
    embed: bool,
    no_thumbnails: bool,
    title: str,
    page_size: int,
) -> None:
    """Write static HTML pages for the records in RECORDS (JSONL or Parquet files written by
    'framepipe sample' or 'framepipe caption', folders of part files, or 'sample' output
    folders): a summary with the commonest errors, filters, and one card per clip with its
    frames, questions and answers, or its error; failed clips first, --page-size a page."""
    from framepipe.inputs.remote import is_remote
    from framepipe.report import write_report

    if output is None and is_remote(records[0]):
        output = Path("report.html")  # a store's output: the page is written here
    elif output is None:
        first = Path(records[0])
        output = (first if first.is_dir() else first.parent) / "report.html"
    path = write_report(
        records,
        output,
        base_dir=base_dir,
        thumbnails=not no_thumbnails,
        embed=embed,
        title=title,
        page_size=page_size,
    )
    note(f"report -> {path}")
