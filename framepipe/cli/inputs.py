"""The input options shared by ``sample`` and ``caption``: manifests (``--inputs-from``),
remote inputs (``--cache-dir``, ``--keep-downloads``, ``--storage-option``) and
``--shard I/N``."""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any, TypeVar

import click

from framepipe.cli.common import field_default, kv_option, parse_kv, stacked
from framepipe.config import SampleConfig
from framepipe.errors import FramepipeError

F = TypeVar("F", bound=Callable[..., Any])


def input_options(fn: F) -> F:
    """``--inputs-from``, ``--cache-dir``, ``--keep-downloads``, ``--storage-option`` and
    ``--shard``."""
    opts = [
        click.option(
            "--inputs-from",
            "inputs_from",
            multiple=True,
            type=click.Path(dir_okay=False, path_type=str),
            help="A manifest of inputs (repeatable): .txt (one path or URI a line), .csv, "
            ".jsonl or .parquet with a 'path' column and optional id, questions, start_s, "
            "end_s. Streamed: millions of rows are fine.",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=str),
            default=None,
            help="Where remote inputs (s3://, gs://, https://) are downloaded before decoding.  "
            "[default: $FRAMEPIPE_CACHE_DIR or ~/.cache/framepipe/remote]",
        ),
        click.option(
            "--keep-downloads/--no-keep-downloads",
            default=field_default(SampleConfig, "keep_downloads"),
            show_default=True,
            help="Keep downloaded remote inputs in --cache-dir for later runs; with "
            "--no-keep-downloads each is removed once its clips are read (the cache never "
            "grows; a re-run downloads again what it must reopen).",
        ),
        kv_option(
            "--storage-option",
            "storage_options",
            "fsspec option for remote inputs, e.g. endpoint_url=http://127.0.0.1:9000 or "
            "anon=true (repeatable; values parsed as JSON when they can be).",
        ),
        click.option(
            "--shard",
            default=None,
            metavar="I/N",
            help="Run only shard I (from 0) of N: a stable 1/N of the inputs, for array jobs; "
            "merge the N outputs with 'framepipe merge'.",
        ),
    ]
    return stacked(opts)(fn)


def input_kwargs(paths: tuple[str, ...], kw: dict[str, Any], cfg: SampleConfig) -> dict[str, Any]:
    """Pop the input options from ``kw`` (the storage options go into ``cfg``) and return
    the run's input arguments; a usage error when there is nothing to read, or a bad shard."""
    from framepipe.inputs import parse_shard

    manifests = list(kw.pop("inputs_from"))
    cfg.storage_options = parse_kv(kw.pop("storage_options"), "--storage-option")
    cfg.keep_downloads = kw.pop("keep_downloads")
    if not paths and not manifests:
        raise click.UsageError("give PATHS, --inputs-from FILE, or both")
    try:
        shard = parse_shard(kw.pop("shard"))
    except FramepipeError as exc:
        raise click.UsageError(str(exc)) from exc
    return {"inputs_from": manifests or None, "cache_dir": kw.pop("cache_dir"), "shard": shard}


def input_count(inputs: object) -> int | None:
    """How many inputs there are, or None when they stream (a manifest)."""
    return len(inputs) if isinstance(inputs, Sized) else None
