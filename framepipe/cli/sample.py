"""``framepipe sample PATH... -n N -o DIR``: choose and save n frames per clip."""

from __future__ import annotations

import sys
from typing import Any

import click

from framepipe.cli.common import Command, both_given, deprecated, examples, given, note
from framepipe.cli.options import FORMAT_TEXT, RETRY, FormatChoice, Row, Unset, options
from framepipe.cli.progress import run_with_progress
from framepipe.cli.run_options import RUN, decode_timeout, run_arguments

IMAGE_FORMATS = ("jpg", "png")

# fmt: off
ROWS: list[Row] = [
    ("-o --output", click.Path(file_okay=False, path_type=str), None,
     "Output folder: frames, contact sheets and manifest.jsonl (manifest.parquet with "
     "--format parquet).",
     {"required": True, "old": ("--out",)}),
    # old spellings, for one release: --format jpg|png (the image format), --manifest-format
    ("--format", FormatChoice(old=IMAGE_FORMATS),
     Unset("the existing manifest's, else jsonl"), FORMAT_TEXT),
    ("--manifest-format", FormatChoice(), None, "", {"hidden": True}),
    ("--image-format", IMAGE_FORMATS, "jpg", "Image format of the saved frames."),
    ("--no-sheet", bool, None, "Do not write a contact sheet per clip."),
    ("--overwrite", bool, None, "Start afresh instead of skipping clips already in the manifest."),
    RETRY,
]
LOCAL: list[Row] = [
    ("--workers", click.IntRange(min=0), 1,
     "Decode and write clips in this many processes (0: in this one, for debugging: then no "
     "--decode-timeout protects the run from a hung decoder)."),
    decode_timeout("Seconds one input may take to open, or one clip to decode, before its "
                   "decoder is stopped (that clip or input failed; the run goes on)."),
]
# fmt: on


@click.command(
    "sample",
    cls=Command,
    epilog=examples(
        "framepipe sample videos/ -n 8 -o out/",
        "framepipe sample movie.mp4 -n 6 --sampler keyframe -o out/",
        "framepipe sample movie.mp4 -n 4 --clip-seconds 10 -o out/",
        "framepipe sample --inputs-from clips.csv -n 8 -o out/ --format parquet",
    ),
)
@options(ROWS, RUN, LOCAL)
def command(paths: tuple[str, ...], output: str, format: str | None, **kw: Any) -> None:
    """Choose n frames per clip and write them, a contact sheet, and DIR/manifest.jsonl
    (DIR/manifest.parquet with --format parquet).

    PATHS are files or folders (searched recursively) or remote URIs (s3://, gs://,
    https://); --inputs-from reads them from a manifest. Exit status is 1 when any clip
    failed, after all the others are done; 2 for a bad setting, refused before any work.
    """
    from framepipe.runs.sample import sample

    ctx = click.get_current_context()
    if format in IMAGE_FORMATS:
        if given(ctx, "image_format"):
            raise both_given(f"--format {format}", "--image-format")
        deprecated(f"--format {format}", f"--image-format {format} (--format: the manifest's)")
        kw["image_format"], format = format, None
    if (old := kw.pop("manifest_format")) is not None:
        if format is not None:
            raise both_given("--manifest-format", "--format")
        deprecated("--manifest-format", "--format")
        format = old
    cfg, run_kw = run_arguments(paths, kw)
    summary = run_with_progress(
        sample,
        cfg,
        output,
        "do the rest",
        paths=paths,
        cfg=cfg,
        out_dir=output,
        format=format,
        sheets=not kw.pop("no_sheet"),
        **kw,
        **run_kw,
    )
    note(
        f"{summary.done} clip(s) written, {summary.skipped} already done, "
        f"{len(summary.failed)} failed -> {summary.output} "
        f"({summary.elapsed_s:.1f} s)"
    )
    if summary.failed:
        sys.exit(1)
