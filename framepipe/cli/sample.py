"""``framepipe sample PATH... -n N -o DIR``: choose and save n frames per clip."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import click

from framepipe.cli.common import sample_config_from
from framepipe.cli.engine_options import decode_timeout_option, ray_options_from, run_options
from framepipe.cli.inputs import input_count, input_kwargs
from framepipe.cli.output_options import format_option, retry_option
from framepipe.discover import Input, Skipped
from framepipe.errors import FramepipeError
from framepipe.types import ClipResult


@click.command("sample")
@run_options(generate=False)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: frames, contact sheets and manifest.jsonl.",
)
@click.option(
    "--format",
    "image_format",
    type=click.Choice(["jpg", "png"]),
    default="jpg",
    show_default=True,
    help="Image format of the saved frames.",
)
@click.option("--no-sheet", is_flag=True, help="Do not write a contact sheet per clip.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh instead of skipping clips already in the manifest.",
)
@format_option(
    "--manifest-format",
    what="manifest (DIR/manifest.jsonl or .parquet)",
    default="the existing manifest's, else jsonl",
)
@retry_option
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Decode and write clips in this many processes (0: in this one, for debugging: "
    "then no --decode-timeout protects the run from a hung decoder).",
)
@decode_timeout_option(
    "Seconds one input may take to open, or one clip to decode, before its decoder "
    "is stopped (that clip or input failed; the run goes on)."
)
def command(
    paths: tuple[str, ...],
    out_dir: str,
    image_format: str,
    no_sheet: bool,
    overwrite: bool,
    records_format: str | None,
    retry_failed: bool,
    workers: int,
    decode_timeout: float,
    **kw: Any,
) -> None:
    """Choose n frames per clip and write them, a contact sheet, and DIR/manifest.jsonl.

    PATHS are files or folders (searched recursively) or remote URIs (s3://, gs://,
    https://); --inputs-from reads them from a manifest. Exit status is 1 when any clip
    failed, after all the others are done.
    """
    from tqdm import tqdm

    from framepipe.runs.sample import manifest_path, sample

    engine_kw = ray_options_from(kw)  # --engine and the Ray engine's resources
    try:
        cfg = sample_config_from(kw)
    except FramepipeError as exc:
        raise click.UsageError(str(exc)) from exc
    inputs_kw = input_kwargs(paths, kw, cfg)  # manifests, remote inputs, --shard

    bar: dict[str, Any] = {}

    def on_input(inputs: Sequence[Input] | Iterator[Input], notes: Sequence[Skipped]) -> None:
        for note in notes:
            tqdm.write(f"note: skipping {note.path}: {note.reason}", file=sys.stderr)
        bar["bar"] = tqdm(
            total=input_count(inputs),  # None (a bar without a total) for a manifest
            unit="input",
            desc="sample",
            file=sys.stderr,
            disable=None,
            dynamic_ncols=True,
        )
        bar["seen"] = set()

    def on_record(rec: ClipResult) -> None:
        b = bar["bar"]
        if not bar["seen"]:  # the rate and ETA start with the first record, after start-up
            b.reset(total=b.total)
        # with --workers, records of several inputs interleave: count each input once
        if rec.source not in bar["seen"]:
            if bar["seen"]:
                b.update(1)
            bar["seen"].add(rec.source)
        b.set_postfix_str(f"{len(rec.indices or [])} frames", refresh=False)

    try:
        summary = sample(
            paths,
            out_dir,
            cfg,
            overwrite=overwrite,
            format=records_format,
            retry_failed=retry_failed,
            image_format=image_format,
            sheets=not no_sheet,
            workers=workers,
            decode_timeout_s=decode_timeout,
            keep_records=False,  # only the counts are printed; the manifest has the records
            on_input=on_input,
            **inputs_kw,
            **engine_kw,
            on_record=on_record,
        )
    except FramepipeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if "bar" in bar:
            b = bar["bar"]
            if b.total is not None:
                b.update(b.total - b.n)
            b.close()
    click.echo(
        f"{summary.done} clip(s) written, {summary.skipped} already done, "
        f"{len(summary.failed)} failed -> {manifest_path(out_dir, records_format)} "
        f"({summary.elapsed_s:.1f} s)",
        err=True,
    )
    if summary.failed:
        sys.exit(1)
