"""What the commands share: logging through the progress bar, the sampling options (one
table of defaults drives both the click options and their help), and small parsers."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from framepipe.config import SampleConfig
from framepipe.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class _TqdmHandler(logging.Handler):
    """Log lines printed above any progress bar, one line each: ``error: msg``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            msg = self.format(record)
            tqdm.write(msg, file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if (
            record.exc_info
            and record.levelno >= logging.ERROR
            and logging.getLogger("framepipe").isEnabledFor(logging.DEBUG)
        ):
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        if record.levelno <= logging.DEBUG:
            return f"debug: {record.name}: {msg}"
        return msg


def setup_logging(level: int) -> None:
    root = logging.getLogger("framepipe")
    for h in list(root.handlers):
        if isinstance(h, _TqdmHandler):
            root.removeHandler(h)
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(level)
    # propagation stays on: with no handler on the root logger (a plain CLI run) nothing is
    # printed twice, and an embedding application's own handlers still see our records.


def parse_kv(pairs: tuple[str, ...], option: str) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}``; values parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


# One table: option name -> (default, help). Used for the click options and their help.
SAMPLING_DEFAULTS: dict[str, tuple[Any, str]] = {
    "n": (8, "Frames (or views) per clip."),
    "sampler": ("uniform", "Sampler name (uniform, keyframe, iframe, nview) or module:function."),
    "mode": ("centers", "uniform: 'centers' of n equal segments, or 'endpoints' (both ends)."),
    "fps": (None, "uniform: one frame every 1/FPS seconds, capped at n."),
    "overflow": (
        "repeat_last",
        "When a clip has fewer frames than n: repeat_last, all (use fewer) or error.",
    ),
    "clips": ("whole", "How to cut sources into clips: whole, windows or shots."),
    "clip_seconds": (None, "Cut videos into windows of this many seconds (implies windows)."),
    "stride_seconds": (None, "Start a window every this many seconds [default: clip length]."),
    "kind": (None, "Force the input kind: video, multiview or render [default: guessed]."),
}


def sampling_options(fn: F) -> F:
    """The options that choose clips and frames, shared by ``sample`` and ``caption``."""
    d = SAMPLING_DEFAULTS
    opts = [
        click.option(
            "-n",
            "--num-frames",
            "n",
            type=int,
            default=d["n"][0],
            show_default=True,
            help=d["n"][1],
        ),
        click.option("--sampler", default=d["sampler"][0], show_default=True, help=d["sampler"][1]),
        click.option(
            "--mode",
            type=click.Choice(["centers", "endpoints"]),
            default=d["mode"][0],
            show_default=True,
            help=d["mode"][1],
        ),
        click.option("--fps", type=float, default=None, help=d["fps"][1]),
        click.option(
            "--overflow",
            type=click.Choice(["repeat_last", "all", "error"]),
            default=d["overflow"][0],
            show_default=True,
            help=d["overflow"][1],
        ),
        click.option(
            "--sampler-opt",
            "sampler_opts",
            multiple=True,
            metavar="KEY=VALUE",
            help="Extra sampler parameter (repeatable).",
        ),
        click.option(
            "--clips",
            type=click.Choice(["whole", "windows", "shots"]),
            default=d["clips"][0],
            show_default=True,
            help=d["clips"][1],
        ),
        click.option("--clip-seconds", type=float, default=None, help=d["clip_seconds"][1]),
        click.option("--stride-seconds", type=float, default=None, help=d["stride_seconds"][1]),
        click.option(
            "--clip-opt",
            "clip_opts",
            multiple=True,
            metavar="KEY=VALUE",
            help="Extra clip-planner parameter, e.g. min_shot_s=1 (repeatable).",
        ),
        click.option(
            "--kind",
            type=click.Choice(["video", "multiview", "render"]),
            default=None,
            help=d["kind"][1],
        ),
        click.option(
            "--source-opt",
            "source_opts",
            multiple=True,
            metavar="KEY=VALUE",
            help="Extra source option, e.g. backend=pyav (repeatable).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def sample_config_from(kw: dict[str, Any]) -> SampleConfig:
    """Build a :class:`SampleConfig` from the parsed sampling options (popped from ``kw``)."""
    n = kw.pop("n")  # n < 1 is reported per clip by the sampler, as a failed record
    sampler = kw.pop("sampler")
    params: dict[str, Any] = {"overflow": kw.pop("overflow")}
    mode = kw.pop("mode")
    fps = kw.pop("fps")
    if sampler == "uniform":
        params["mode"] = mode
        if fps is not None:
            params["fps"] = fps
    elif fps is not None:
        raise ConfigError(f"--fps applies to the uniform sampler, not {sampler!r}")
    params.update(parse_kv(kw.pop("sampler_opts"), "--sampler-opt"))
    clip_seconds = kw.pop("clip_seconds")
    clips = kw.pop("clips")
    if clips == "windows" and clip_seconds is None:
        raise ConfigError("--clips windows needs --clip-seconds")
    return SampleConfig(
        n=n,
        sampler=sampler,
        sampler_params=params,
        clips=clips,
        clip_seconds=clip_seconds,
        stride_seconds=kw.pop("stride_seconds"),
        clip_params=parse_kv(kw.pop("clip_opts"), "--clip-opt"),
        kind=kw.pop("kind"),
        source_options=parse_kv(kw.pop("source_opts"), "--source-opt"),
    )


def fail(message: str) -> None:
    """Exit with a one-line error (status 2, like click's usage errors)."""
    raise click.ClickException(message)


def report_per_source(
    paths: tuple[str, ...],
    *,
    kind: str | None,
    source_options: dict[str, Any],
    describe: Callable[[Any], dict[str, Any]],
    as_json: bool,
    table: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Open each input found under ``paths`` and print one row per input: ``describe(source)``,
    or a ``failed`` row with a one-line error (printed as it happens, the others go on).
    Prints the rows as a JSON array or with ``table``; exits 1 when any input failed."""
    from framepipe.discover import discover
    from framepipe.errors import FramepipeError, one_line_error
    from framepipe.sources.base import open_source

    inputs, notes = discover(paths, kind=kind)
    for note in notes:
        click.echo(f"note: skipping {note.path}: {note.reason}", err=True)
    rows: list[dict[str, Any]] = []
    failed = 0
    for item in inputs:
        try:
            if item.error:
                raise FramepipeError(item.error)
            with open_source(item.path, item.kind, **source_options) as src:
                rows.append(describe(src))
        except Exception as exc:
            failed += 1
            msg = one_line_error(exc, item.path)
            rows.append({"source": str(item.path), "status": "failed", "error": msg})
            click.echo(f"error: {msg}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        table(rows)
    if failed:
        sys.exit(1)
