"""``framepipe report RESULTS.jsonl... -o report.html``: a browsable HTML page of the records."""

from __future__ import annotations

from pathlib import Path

import click

from framepipe.errors import FramepipeError


@click.command("report")
@click.argument("records", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_html",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write [default: report.html next to the first records file].",
)
@click.option(
    "--base-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder the records' frame paths are relative to [default: each JSONL file's folder].",
)
@click.option(
    "--embed",
    is_flag=True,
    help="Inline small JPEG thumbnails (data: URIs) so the file stands alone and can be mailed.",
)
@click.option(
    "--no-thumbnails",
    is_flag=True,
    help="Show each clip's contact sheet instead of its frames one by one.",
)
@click.option("--title", default="framepipe report", show_default=True, help="Page title.")
def command(
    records: tuple[Path, ...],
    out_html: Path | None,
    base_dir: Path | None,
    embed: bool,
    no_thumbnails: bool,
    title: str,
) -> None:
    """Write one self-contained HTML page for the records in RECORDS (JSONL files written by
    ``sample`` or ``caption``, or ``sample`` output folders): a summary, filters, and one card
    per clip with its frames, questions and answers, or its error."""
    from framepipe.report import write_report

    if out_html is None:
        first = records[0]
        out_html = (first if first.is_dir() else first.parent) / "report.html"
    try:
        path = write_report(
            records,
            out_html,
            base_dir=base_dir,
            thumbnails=not no_thumbnails,
            embed=embed,
            title=title,
        )
    except FramepipeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"report -> {path}", err=True)
