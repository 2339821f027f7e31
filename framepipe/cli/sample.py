"""``framepipe sample PATH... -n N -o DIR``: choose and save n frames per clip."""

from __future__ import annotations

import sys
from typing import Any

import click

from framepipe.cli.common import Command, Progress, note, run_with_progress
from framepipe.cli.options import (
    FORMAT_TEXT,
    RETRY,
    RUN,
    FormatChoice,
    Row,
    Unset,
    decode_timeout,
    options,
    run_arguments,
)

IMAGE_FORMATS = ("jpg", "png")

# fmt: off
ROWS: list[Row] = [
    ("-o --output", click.Path(file_okay=False, path_type=str), None,
     "Output folder: frames, contact sheets and manifest.jsonl.",
     {"required": True, "old": ("--out",)}),
    # --format jpg|png was the image format: taken for one release, with a note
    ("--format", FormatChoice(old=IMAGE_FORMATS),
     Unset("the existing manifest's, else jsonl"), FORMAT_TEXT, {"old": ("--manifest-format",)}),
    ("--image-format", IMAGE_FORMATS, "jpg", "Image format of the saved frames."),
    ("--no-sheet", bool, None, "Do not write a contact sheet per clip."),
    ("--overwrite", bool, None, "Start afresh instead of skipping clips already in the manifest."),
    RETRY,
    ("--workers", click.IntRange(min=0), 1,
     "Decode and write clips in this many processes (0: in this one, for debugging: then no "
     "--decode-timeout protects the run from a hung decoder)."),
    decode_timeout("Seconds one input may take to open, or one clip to decode, before its "
                   "decoder is stopped (that clip or input failed; the run goes on)."),
]
# fmt: on


@click.command("sample", cls=Command)
@options(ROWS, RUN)
def command(paths: tuple[str, ...], output: str, format: str | None, **kw: Any) -> None:
    """Choose n frames per clip and write them, a contact sheet, and DIR/manifest.jsonl.

    PATHS are files or folders (searched recursively) or remote URIs (s3://, gs://,
    https://); --inputs-from reads them from a manifest. Exit status is 1 when any clip
    failed, after all the others are done; 2 for a bad setting, refused before any work.
    """
    from framepipe.runs.sample import manifest_path, sample

    if format in IMAGE_FORMATS:
        use = f"--image-format {format} (--format is the manifest's: jsonl or parquet)"
        note(f"warning: --format {format} is deprecated and goes in the next release: use {use}")
        kw["image_format"], format = format, None
    cfg, run_kw = run_arguments(paths, kw)
    progress = Progress("sample", whole=cfg.clips == "whole" and cfg.clip_seconds is None)
    summary = run_with_progress(
        sample,
        progress,
        output,
        "do the rest",
        paths=paths,
        out_dir=output,
        cfg=cfg,
        format=format,
        sheets=not kw.pop("no_sheet"),
        decode_timeout_s=kw.pop("decode_timeout"),
        **kw,
        **run_kw,
    )
    click.echo(
        f"{summary.done} clip(s) written, {summary.skipped} already done, "
        f"{len(summary.failed)} failed -> {manifest_path(output, format)} "
        f"({summary.elapsed_s:.1f} s)",
        err=True,
    )
    if summary.failed:
        sys.exit(1)
