"""``framepipe merge INPUTS... -o OUT``: one output from part files, shard outputs and plain
outputs, here or in an object store, one record per clip (the latest wins)."""

from __future__ import annotations

from typing import Any

import click

from framepipe.cli.common import Command, examples, note, parse_kv
from framepipe.cli.options import FORMAT, KV, KV_VALUES, Unset, options


class InputPath(click.Path):
    """A local path that exists, or a URI (an output in an object store, checked as it is
    read)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from framepipe.inputs.remote import is_remote

        return value if is_remote(value) else super().convert(value, param, ctx)


# fmt: off
ROWS: list[Any] = [
    click.argument("inputs", nargs=-1, required=True, type=InputPath(exists=True, path_type=str)),
    ("-o --output", click.Path(dir_okay=False, path_type=str), None,
     "The merged records file (.jsonl or .parquet); it may be one of the INPUTS.",
     {"required": True}),
    FORMAT,
    ("--storage-option", KV, None,
     "fsspec option for INPUTS in an object store (s3://bucket/results/, gs://...), e.g. "
     f"endpoint_url=http://127.0.0.1:9000 or anon=true ({KV_VALUES})."),
    ("--cache-dir", click.Path(file_okay=False, path_type=str),
     Unset("$FRAMEPIPE_CACHE_DIR, else $XDG_CACHE_HOME/framepipe/remote, else "
           "~/.cache/framepipe/remote"),
     "Where INPUTS in an object store are downloaded (in .merge/; an unchanged object is "
     "not downloaded again)."),
]
# fmt: on


@click.command(
    "merge",
    cls=Command,
    epilog=examples(
        "framepipe merge results/ -o results.jsonl",
        "framepipe merge results.jsonl -o results.parquet",
        "framepipe merge s3://bucket/results/ -o results.jsonl",
    ),
)
@options(ROWS)
def command(
    inputs: tuple[str, ...],
    output: str,
    format: str | None,
    storage_option: tuple[str, ...],
    cache_dir: str | None,
) -> None:
    """Merge records files into OUTPUT, one record per clip: where several records have the
    same resume key, the latest written wins (files in modification-time order, records in
    file order) but a failed record never replaces an ok one, and a failure of a whole input
    goes once its clips have records.

    INPUTS are records files (JSONL or Parquet), folders of part files (part-*.jsonl,
    part-*.parquet) and 'framepipe sample' output folders (manifest.jsonl), here or in an
    object store (s3://bucket/results/, s3://bucket/out/shard-3.jsonl, or a pattern such
    as 's3://bucket/out/shard-*.jsonl'; downloaded first).
    Relative frame paths are rewritten to stay right from OUTPUT's folder (a store's frames:
    as URIs). OUTPUT is written to a temporary
    file beside it and moved into place, so a failed merge leaves it as it was. Inputs
    with no record at all are an error (exit status 1).
    """
    from framepipe.extras import check_extras
    from framepipe.output import format_of, merge

    check_extras(format=format_of(output, format))  # before any input is read
    res = merge(  # inputs without a record: an error, nothing written
        inputs,
        output,
        format,
        storage_options=parse_kv(storage_option, "--storage-option"),
        cache_dir=cache_dir,
    )
    note(
        f"{res.records} record(s) from {res.files} file(s) -> {res.output} "
        f"({res.dropped} superseded)"
    )
