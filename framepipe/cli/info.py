"""``framepipe info PATH...``: each source's metadata, as a table or JSON."""

from __future__ import annotations

import click

from framepipe.cli.common import Command, cell_text, examples
from framepipe.cli.options import KIND, SOURCE_OPT, options


@click.command(
    "info",
    cls=Command,
    epilog=examples(
        "framepipe info video.mp4 scene_folder/ model.ply",
        "framepipe info videos/ --json",
    ),
)
@options(
    [
        click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str)),
        ("--json", bool, None, "One JSON object per source, as a list.", {"dest": "as_json"}),
        KIND,
        SOURCE_OPT,
    ]
)
def command(
    paths: tuple[str, ...], as_json: bool, kind: str | None, source_opt: tuple[str, ...]
) -> None:
    """Print each source's metadata: frames, fps, duration, size, keyframes, views.

    PATHS are files or folders (searched recursively) or remote URIs (s3://, gs://,
    https://: downloaded to the cache first, as by sample). Exit status is 1 when any input
    failed, after all the others are printed; 2 for a bad setting, refused before any input
    is opened.
    """
    from framepipe.cli.common import parse_kv, report_per_source

    options = parse_kv(source_opt, "--source-opt")
    report_per_source(
        paths,
        kind=kind,
        source_options=options,
        describe=lambda src, name: {**src.info().to_json(), "source": name},
        as_json=as_json,
        table=_table,
    )


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
        return cell_text(v)

    table = [cols] + [[cell(r, c) for c in cols] for r in ok]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
