"""The options ``sample`` and ``caption`` share (:data:`RUN`: inputs, sampling, engine),
which options apply to which engine and backend (:data:`APPLIES`), and
:func:`run_arguments`, which turns them into a run's arguments. The defaults are those of
the library's configs (one place each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from framepipe.cli.common import SettingError, field_default, flag, given, param_default, parse_kv
from framepipe.cli.options import KIND, KV, KV_VALUES, SOURCE_OPT, Row, Unset
from framepipe.clips import CLIP_PLANNERS
from framepipe.config import SampleConfig
from framepipe.engine import DEFAULT_DECODE_TIMEOUT_S, ENGINES
from framepipe.engine.base import RayOptions, pool_bounds
from framepipe.errors import ConfigError
from framepipe.samplers.base import SAMPLERS, OverflowPolicy
from framepipe.samplers.uniform import UniformMode, uniform


class PoolSize(click.ParamType):
    """An actor pool's size: ``N``, or ``MIN:MAX`` (a pool that grows with the cluster; an
    empty MAX: no limit)."""

    name = "N|MIN:MAX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        option = param.opts[-1] if param is not None else "the pool size"
        try:
            return pool_bounds(str(value), option)
        except ConfigError as exc:
            raise SettingError(str(exc)) from None  # one line, as the library's checks


def decode_timeout(text: str) -> Row:
    """``--decode-timeout SECONDS`` (> 0), ``text`` its help."""
    positive = click.FloatRange(min=0, min_open=True)
    return ("--decode-timeout", positive, DEFAULT_DECODE_TIMEOUT_S, text,
            {"dest": "decode_timeout_s"})  # fmt: skip


# fmt: off
SAMPLING: list[Row] = [
    ("-n --num-frames", int, field_default(SampleConfig, "n"), "Frames (or views) per clip.",
     {"dest": "n"}),
    ("--sampler", SAMPLERS, field_default(SampleConfig, "sampler"),
     "Sampler: {names}, or module:function."),
    ("--mode", UniformMode, param_default(uniform, "mode"),
     "uniform: 'centers' of n equal segments, or 'endpoints' (both ends)."),
    ("--fps", float, None, "uniform: one frame every 1/FPS seconds, capped at n."),
    ("--overflow", OverflowPolicy, param_default(uniform, "overflow"),
     "When a clip has fewer frames than n: repeat_last, all (use fewer) or error."),
    ("--sampler-opt", KV, None,
     "Option of the chosen --sampler, e.g. method=appearance (nview) or detector=transnetv2 "
     f"(keyframe); one it does not take is refused, naming those it takes ({KV_VALUES})."),
    ("--clips", CLIP_PLANNERS, field_default(SampleConfig, "clips"),
     "How to cut sources into clips."),
    ("--clip-seconds", float, None,
     "Cut videos into windows of this many seconds (implies windows)."),
    ("--stride-seconds", float, Unset("clip length"), "Start a window every this many seconds."),
    ("--clip-opt", KV, None,
     f"Option of the --clips planner, e.g. min_shot_s=1 or max_shot_s=20 (shots) ({KV_VALUES})."),
    KIND,
    SOURCE_OPT,
]
# fmt: on

# fmt: off
INPUTS: list[Row] = [
    ("--inputs-from", click.Path(dir_okay=False, path_type=str), None,
     "A manifest of inputs (repeatable): .txt (one path or URI a line), .csv, .jsonl or "
     ".parquet with a 'path' column and optional id, questions, start_s, end_s. Streamed: "
     "millions of rows are fine. '-' reads stdin (format from its content).",
     {"multiple": True}),
    ("--cache-dir", click.Path(file_okay=False, path_type=str),
     Unset("$FRAMEPIPE_CACHE_DIR, else $XDG_CACHE_HOME/framepipe/remote, else "
           "~/.cache/framepipe/remote"),
     "Where remote inputs (s3://, gs://, https://) are downloaded before decoding, and "
     "where the records of a remote -o (s3://...) wait, in .outputs/, until the run "
     "publishes them."),
    ("--keep-downloads/--no-keep-downloads", bool, field_default(SampleConfig, "keep_downloads"),
     "Keep downloaded remote inputs in --cache-dir for later runs; with --no-keep-downloads "
     "each is removed once its clips are read (the cache never grows; a re-run downloads "
     "again what it must reopen)."),
    ("--download-stall", click.FloatRange(min=0, min_open=True),
     field_default(SampleConfig, "download_stall_s"),
     "Seconds a remote input's download may receive nothing before that input fails (a "
     "download that makes progress is not timed, nor counted in --decode-timeout).",
     {"dest": "download_stall_s", "metavar": "SECONDS"}),
    ("--storage-option", KV, None,
     "fsspec option for remote inputs and remote outputs (-o s3://..., caption's --frames-dir "
     f"s3://...), e.g. endpoint_url=http://127.0.0.1:9000 or anon=true ({KV_VALUES})."),
    ("--shard", str, None,
     "Run only shard I (from 0) of N: a stable 1/N of the inputs, for array jobs; merge the "
     "N outputs with 'framepipe merge'.", {"metavar": "I/N"}),
]
# fmt: on

# fmt: off
ENGINE: list[Row] = [
    ("--engine", ENGINES, "local",
     "local: worker processes on this machine; ray: Ray Data on a cluster (needs the ray "
     "extra)."),
    ("--ray-address", str, Unset("RAY_ADDRESS, else a local Ray is started"),
     "Ray cluster to join (host:port, auto, ray://...)."),
    ("--decode-actors", PoolSize(),
     Unset("the cluster's CPUs left after the generation actors, growing"),
     "Ray read actors (each with one decoder process): N, or MIN:MAX to grow with the "
     "cluster."),
    ("--decode-cpus", click.FloatRange(min=0, min_open=True), RayOptions.decode_cpus,
     "CPUs per Ray read actor."),
]
# fmt: on

# fmt: off
GENERATE_ACTORS: list[Row] = [
    ("--generate-actors", PoolSize(),
     Unset("one per GPU, growing; one on a cluster without GPUs"),
     "Ray generation actors (each loads the model once): N, or MIN:MAX to grow with the "
     "cluster."),
    ("--generate-gpus", click.FloatRange(min=0), Unset("1 where the cluster has GPUs, else 0"),
     "GPUs per Ray generation actor (0: CPU actors)."),
]
# fmt: on

RAY_FIELDS = {
    "ray_address": "address",
    "decode_actors": "decode_actors",
    "decode_cpus": "decode_cpus",
    "generate_actors": "generate_actors",
    "generate_gpus": "generate_gpus",
}
"""Engine option -> :class:`RayOptions` field."""

MODEL_IN_PROCESS = ("revision", "device", "dtype", "quantize", "attn", "trust_remote_code",
                    "offline")  # fmt: skip
"""``caption``'s options of the model loaded in this process (``--backend transformers``)."""
SERVER = ("base_url", "api_key", "max_concurrency", "request_timeout", "server_wait")
"""``caption``'s options of a model server (every other backend)."""

APPLIES: dict[str, tuple[str, str, bool]] = {
    **dict.fromkeys(RAY_FIELDS, ("engine", "ray", True)),
    **dict.fromkeys(("workers", "prefetch"), ("engine", "ray", False)),
    **dict.fromkeys(MODEL_IN_PROCESS, ("backend", "transformers", True)),
    **dict.fromkeys(SERVER, ("backend", "transformers", False)),
}
"""Which options belong to which engine or backend: option -> ``(chooser, value, only)``:
the option applies only when the option ``chooser`` is ``value`` (``only``), or never then
(not ``only``). One given where it does not apply is refused before any work."""


def refuse_what_does_not_apply(ctx: click.Context) -> None:
    """SettingError (one line, exit 2) for the first option the user gave (its default never
    counts) that the chosen engine or backend would ignore (see :data:`APPLIES`)."""
    for name, (chooser, value, only) in APPLIES.items():
        if name not in ctx.params or not given(ctx, name):
            continue
        chosen = ctx.params[chooser]
        if (chosen == value) != only:
            what = "applies to" if only else "does not apply to"
            why = f", not {flag(ctx, chooser)} {chosen}" if only else ""
            raise SettingError(f"{flag(ctx, name)} {what} {flag(ctx, chooser)} {value}{why}")


PATHS = click.argument("paths", nargs=-1, required=False, type=click.Path(path_type=str))
RUN: list[Row | Callable[[Any], Any]] = [PATHS, *SAMPLING, *INPUTS, *ENGINE]
"""What ``sample`` and ``caption`` both take: PATHS and the sampling, input and engine
options."""


def run_arguments(
    paths: tuple[str, ...], kw: dict[str, Any]
) -> tuple[SampleConfig, dict[str, Any]]:
    """Pop the options of :data:`RUN` (and :data:`GENERATE_ACTORS`) out of ``kw``: the run's
    :class:`SampleConfig` and its other keyword arguments (inputs, engine)."""
    from framepipe.inputs import parse_shard

    ctx = click.get_current_context(silent=True)
    if ctx is not None:  # before anything is made of the options
        refuse_what_does_not_apply(ctx)
    sampler = kw.pop("sampler")
    # --overflow goes to the sampler only when the user set it: a plug-in that declares no
    # overflow runs with its default left out, and refuses it (one line) when it is given.
    overflow = kw.pop("overflow")
    params: dict[str, Any] = {}
    if ctx is None or given(ctx, "overflow") or overflow != param_default(uniform, "overflow"):
        params["overflow"] = overflow
    mode, fps = kw.pop("mode"), kw.pop("fps")
    if sampler == "uniform":
        params.update({"mode": mode} if fps is None else {"mode": mode, "fps": fps})
    elif fps is not None or mode != param_default(uniform, "mode"):
        raise ConfigError(f"--fps and --mode apply to the uniform sampler, not {sampler!r}")
    params.update(parse_kv(kw.pop("sampler_opt"), "--sampler-opt"))
    cfg = SampleConfig(
        n=kw.pop("n"),
        sampler=sampler,
        sampler_params=params,
        clips=kw.pop("clips"),
        clip_seconds=kw.pop("clip_seconds"),
        stride_seconds=kw.pop("stride_seconds"),
        clip_params=parse_kv(kw.pop("clip_opt"), "--clip-opt"),
        kind=kw.pop("kind"),
        source_options=parse_kv(kw.pop("source_opt"), "--source-opt"),
        storage_options=parse_kv(kw.pop("storage_option"), "--storage-option"),
        keep_downloads=kw.pop("keep_downloads"),
        download_stall_s=kw.pop("download_stall_s"),
    )
    manifests = list(kw.pop("inputs_from"))
    if not paths and not manifests:
        raise click.UsageError("give PATHS, --inputs-from FILE, or both")
    engine = kw.pop("engine")
    if ctx is not None:  # Ray's native log lines stay in its logs while the command runs
        from framepipe.cli.ray_logs import native_ray_lines_to_log

        ctx.with_resource(native_ray_lines_to_log(engine))
    ray = {field: kw.pop(name) for name, field in RAY_FIELDS.items() if name in kw}
    return cfg, {
        "inputs_from": manifests or None,
        "cache_dir": kw.pop("cache_dir"),
        "shard": parse_shard(kw.pop("shard")),
        "engine": engine,
        "ray_options": RayOptions(**ray) if engine == "ray" else None,
    }
