"""``framepipe make-tiny-model DIR``: build the tiny random-weight LLaVA for tests and
offline smoke runs."""

from __future__ import annotations

import click

from framepipe.errors import FramepipeError


@click.command("make-tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weights.")
@click.option(
    "--image-size",
    type=int,
    default=56,
    show_default=True,
    help="Input image size in pixels ((size/14)^2 tokens per image).",
)
@click.option("--overwrite", is_flag=True, help="Replace a tiny model already in OUT_DIR.")
def command(out_dir: str, seed: int, image_size: int, overwrite: bool) -> None:
    """Write a tiny LLaVA with RANDOM weights (SigLIP vision tower, 2-layer Qwen2, the
    llava-interleave chat template) to OUT_DIR, loadable with --model OUT_DIR.

    Its answers are noise; records made with it say "random_weights": true.
    """
    from framepipe.generate.tiny import make_tiny_model

    try:
        path = make_tiny_model(out_dir, seed=seed, image_size=image_size, overwrite=overwrite)
    except FramepipeError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
    click.echo(f"wrote a tiny random-weight model to {path} (use --model {path})")
