"""``framepipe make-tiny-model DIR``: build the tiny random-weight LLaVA for tests and
offline smoke runs."""

from __future__ import annotations

import click

from framepipe.cli.common import Command, examples
from framepipe.cli.options import options


@click.command(
    "make-tiny-model",
    cls=Command,
    epilog=examples(
        "framepipe make-tiny-model tiny-model/",
        "framepipe caption video.mp4 -n 4 --model tiny-model/ -o smoke.jsonl",
    ),
)
@options(
    [
        click.argument("out_dir", type=click.Path(file_okay=False, path_type=str)),
        ("--seed", int, 0, "Seed of the weights."),
        ("--image-size", int, 56, "Input image size in pixels ((size/14)^2 tokens per image)."),
        ("--overwrite", bool, None, "Replace a tiny model already in OUT_DIR."),
    ]
)
def command(out_dir: str, seed: int, image_size: int, overwrite: bool) -> None:
    """Write a tiny LLaVA with RANDOM weights (SigLIP vision tower, 2-layer Qwen2, the
    llava-interleave chat template) to OUT_DIR, loadable with --model OUT_DIR.

    Its answers are noise; records made with it say "random_weights": true.
    """
    from framepipe.generate.tiny import make_tiny_model

    try:
        path = make_tiny_model(out_dir, seed=seed, image_size=image_size, overwrite=overwrite)
    except OSError as exc:
        raise click.ClickException(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
    click.echo(f"wrote a tiny random-weight model to {path} (use --model {path})")
