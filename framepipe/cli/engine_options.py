"""The engine options of ``framepipe sample`` and ``framepipe caption``: ``--engine local|ray``
and the Ray engine's cluster and resources (defaults from :class:`RayOptions`), the
decode timeout, and :func:`run_options`, all that ``sample`` and ``caption`` share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from framepipe.cli.common import sampling_options, stacked, unset_option
from framepipe.cli.inputs import input_options
from framepipe.engine import DEFAULT_DECODE_TIMEOUT_S, ENGINES
from framepipe.engine.ray import RayOptions


def engine_options(*, generate: bool) -> Callable[[Any], Any]:
    """The click options; ``generate`` adds those of the generation actors (caption)."""
    opts = [
        click.option(
            "--engine",
            type=click.Choice(ENGINES.names()),
            default="local",
            show_default=True,
            help="local: worker processes on this machine; ray: Ray Data on a cluster "
            "(needs the ray extra).",
        ),
        unset_option(
            "--ray-address",
            text="Ray cluster to join (host:port, auto, ray://...).",
            default="RAY_ADDRESS, else a local Ray is started",
        ),
        unset_option(
            "--decode-actors",
            type=click.IntRange(min=1),
            text="Ray read actors (each with one decoder process).",
            default="the cluster's CPUs left after the generation actors",
        ),
        click.option(
            "--decode-cpus",
            type=click.FloatRange(min=0, min_open=True),
            default=RayOptions.decode_cpus,
            show_default=True,
            help="CPUs per Ray read actor.",
        ),
    ]
    if generate:
        opts += [
            unset_option(
                "--generate-actors",
                type=click.IntRange(min=1),
                text="Ray generation actors (each loads the model once).",
                default="one per GPU, one on a cluster without GPUs",
            ),
            unset_option(
                "--generate-gpus",
                type=click.FloatRange(min=0),
                text="GPUs per Ray generation actor (0: CPU actors).",
                default="1 where the cluster has GPUs, else 0",
            ),
        ]

    return stacked(opts)


def run_options(*, generate: bool) -> Callable[[Any], Any]:
    """What ``sample`` and ``caption`` both take: the PATHS argument, the sampling, input and
    engine options (``generate``: see :func:`engine_options`)."""
    return stacked(
        [
            click.argument("paths", nargs=-1, required=False, type=click.Path(path_type=str)),
            sampling_options,
            input_options,
            engine_options(generate=generate),
        ]
    )


def decode_timeout_option(text: str) -> Callable[[Any], Any]:
    """``--decode-timeout SECONDS`` (``decode_timeout``, > 0), ``help`` being ``text``."""
    return click.option(
        "--decode-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_DECODE_TIMEOUT_S,
        show_default=True,
        help=text,
    )


def ray_options_from(kw: dict[str, Any]) -> dict[str, Any]:
    """Pop the engine options out of ``kw``: ``{"engine": ..., "ray_options": ...}`` for
    ``sample()`` / ``caption()`` (``ray_options`` None on the local engine)."""
    engine = kw.pop("engine", "local")
    fields = {
        "address": kw.pop("ray_address", None),
        "decode_actors": kw.pop("decode_actors", None),
        "decode_cpus": kw.pop("decode_cpus", RayOptions.decode_cpus),
        "generate_actors": kw.pop("generate_actors", None),
        "generate_gpus": kw.pop("generate_gpus", None),
    }
    if engine != "ray":
        return {"engine": engine, "ray_options": None}
    return {"engine": engine, "ray_options": RayOptions(**fields)}
