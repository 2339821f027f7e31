"""The engine options of ``framepipe sample`` and ``framepipe caption``: ``--engine local|ray``
and the Ray engine's cluster and resources (defaults from :class:`RayOptions`), the
decode timeout, and :func:`run_options`, all that ``sample`` and ``caption`` share."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import click

from framepipe.cli.common import sampling_options, stacked, unset_option
from framepipe.cli.inputs import input_options
from framepipe.engine import DEFAULT_DECODE_TIMEOUT_S, ENGINES
from framepipe.engine.base import pool_bounds
from framepipe.engine.ray import RayOptions
from framepipe.errors import ConfigError


class PoolSize(click.ParamType):
    """An actor pool's size: ``N``, or ``MIN:MAX`` (a pool that grows with the cluster; an
    empty MAX: no limit)."""

    name = "N|MIN:MAX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return pool_bounds(str(value), "the pool size")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


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
            type=PoolSize(),
            text="Ray read actors (each with one decoder process): N, or MIN:MAX to grow "
            "with the cluster.",
            default="the cluster's CPUs left after the generation actors, growing",
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
                type=PoolSize(),
                text="Ray generation actors (each loads the model once): N, or MIN:MAX to "
                "grow with the cluster.",
                default="one per GPU, growing; one on a cluster without GPUs",
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
    ``sample()`` / ``caption()`` (``ray_options`` None on the local engine). On Ray, the
    command's stderr keeps Ray's native log lines off the terminal while it runs
    (:func:`native_ray_lines_to_log`)."""
    engine = kw.pop("engine", "local")
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.with_resource(native_ray_lines_to_log(engine))
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


NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWE] \d+ \d+\] ")
"""A log line of Ray's C++ core (``[2026-01-02 10:11:12,345 E 123 123] core_worker.cc:..``)."""


@contextlib.contextmanager
def native_ray_lines_to_log(engine: str) -> Iterator[None]:
    """On ``--engine ray`` at the default verbosity, keep the log lines Ray's C++ core writes
    to this process's stderr (an error-level line per actor pool: ``has constructor arguments
    in the object store and max_restarts > 0``) off the terminal: they are in the session's
    logs (``python-core-driver-*.log``), and ``-v`` shows them. Everything else written to
    stderr passes as it is written."""
    if engine != "ray" or logging.getLogger("framepipe").getEffectiveLevel() < logging.WARNING:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        held = b""
        with os.fdopen(read, "rb", buffering=0) as pipe:
            for chunk in iter(lambda: pipe.read(1 << 16), b""):
                *lines, held = (held + chunk).split(b"\n")
                os.write(
                    terminal, b"".join(ln + b"\n" for ln in lines if not NATIVE_LINE.match(ln))
                )
                if held and not held.startswith(b"["):  # a progress bar's partial line
                    os.write(terminal, held)
                    held = b""
        os.write(terminal, held)

    thread = threading.Thread(target=pump, name="framepipe-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # the pipe ends once no process writes to it any more
        thread.join(timeout=0.5)
        if not thread.is_alive():
            os.close(terminal)
