"""``sample``: choose and save n frames per clip, with a contact sheet and a manifest.

The Python API behind ``framepipe sample``::

    from framepipe import SampleConfig, iter_sample, sample
    summary = sample(["videos/"], "out/", SampleConfig(n=8))
    for rec in iter_sample(["videos/"], "out/", 8):  # the same run, record by record
        print(rec.source, rec.indices)

The run is the shared skeleton (:mod:`framepipe.runs.common`): the engine's decoding
processes save each clip's images as it is read (no frames come back to this process).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.config import SampleConfig, as_sample_config
from framepipe.discovery import Input, InputPaths
from framepipe.engine import DEFAULT_DECODE_TIMEOUT_S, EngineOptions, EngineTask, Work
from framepipe.errors import ConfigError, OutputError
from framepipe.inputs import Shard
from framepipe.inputs.remote import filesystem, is_remote
from framepipe.output import format_of
from framepipe.output.remote import join
from framepipe.output.store import journal_of
from framepipe.records import ClipJob
from framepipe.runs.common import (
    OnInput,
    OnRecord,
    Output,
    RunSummary,
    begin,
    check_run,
    eager,
    save_clip_images,
    stream,
)
from framepipe.types import ClipResult
from framepipe.utils import closed_at_exit

if TYPE_CHECKING:
    from framepipe.engine import RayOptions


MANIFEST = "manifest.jsonl"
"""The records file of a ``sample`` output folder, by default."""


def manifest_path(
    out_dir: str | Path, format: str | None = None, storage_options: dict[str, Any] | None = None
) -> Path | str:
    """The records file of a ``sample`` output folder (in an object store: ``out_dir`` a
    URI): ``manifest.jsonl``, or ``manifest.parquet`` (``format="parquet"``, or without
    ``format`` when only that one is there, or its journal: a run killed before it folded
    its records in). ConfigError when ``format`` names another
    than the manifest the folder holds: its resume, or its ``overwrite``, would leave two."""
    remote = is_remote(str(out_dir))
    exists = remote_exists(storage_options) if remote else os.path.exists
    journal = journal_of(Path("manifest.parquet")).name  # (its records not folded in yet)
    names = {"parquet": ("manifest.parquet", journal), "jsonl": ("manifest.jsonl",)}
    there = [f for f, ns in names.items() if any(exists(join(out_dir, n)) for n in ns)]
    if format is None:
        format = "parquet" if there == ["parquet"] else "jsonl"
    elif there and format_of("", format) not in there:
        raise ConfigError(
            f"{join(out_dir, f'manifest.{there[0]}')}: this output's manifest is {there[0]}, "
            f"not {format} (leave the format out to resume it, or write to another folder)"
        )
    name = f"manifest.{format_of('', format)}"
    return join(out_dir, name) if remote else Path(out_dir) / name


def remote_exists(storage_options: dict[str, Any] | None) -> Callable[[str], bool]:
    """Whether an object is there (False when the store cannot say: the run's own check of
    the output names what is wrong)."""

    def exists(uri: str) -> bool:
        try:
            fs, path = filesystem(uri, storage_options)
            return bool(fs.exists(path))
        except Exception:
            return False

    return exists


@closed_at_exit
def iter_sample(
    paths: InputPaths,
    out_dir: str | Path,
    cfg: SampleConfig | int | None = None,
    *,
    overwrite: bool = False,
    format: str | None = None,
    retry_failed: bool = True,
    image_format: str = "jpg",
    sheets: bool = True,
    workers: int = 1,
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
    keep_records: bool = False,
    on_input: OnInput | None = None,
    on_record: OnRecord | None = None,
    on_skip: Callable[[int], None] | None = None,
    engine: str = "local",
    ray_options: RayOptions | None = None,
    inputs_from: str | Path | Iterable[str | Path] | None = None,
    cache_dir: str | Path | None = None,
    shard: Shard | str | tuple[int, int] | None = None,
) -> Generator[ClipResult, None, RunSummary]:
    """:func:`sample`, lazily: yields each clip's record as it finishes (the records the
    manifest holds; each is in it before it is yielded), in the order they are written.
    Nothing starts before the first record is asked for, and the run goes on only as they
    are (the decoders work at most a few clips ahead). Leaving the loop (``break``, an
    exception, Ctrl-C; or ``close()``) stops the run: the decoders stop, and the manifest
    keeps one record per clip yielded so far (a re-run resumes). A bad setting, or an
    ``out_dir`` that cannot be written, is refused at the call; an error that stops the
    run is raised in the loop. Returns the run's summary (its ``records`` only with
    ``keep_records``)."""
    cfg = as_sample_config(cfg)
    manifest = manifest_path(out_dir, format, cfg.storage_options)
    check_run(cfg, manifest)

    def run() -> Generator[ClipResult, None, RunSummary]:
        t0 = time.perf_counter()
        eng, inputs, notes = begin(
            paths,
            cfg,
            engine,
            EngineOptions(workers=workers, ray=ray_options, on_skip=on_skip),
            on_input=on_input,
            inputs_from=inputs_from,
            cache_dir=cache_dir,
            shard=shard,
        )
        out = out_dir if is_remote(str(out_dir)) else Path(out_dir)
        # the folder is made as the manifest opens (and removed when the run stops before
        # any record: a refused run leaves nothing); ``check_run`` checked that it can be
        summary = RunSummary(notes=list(notes), output=manifest)
        # in decoding processes, maybe with another working directory
        save = functools.partial(
            _save_or_fail,
            out_dir=out.absolute() if isinstance(out, Path) else out,
            image_format=image_format,
            sheet=sheets,
            storage_options=cfg.storage_options,
        )
        work = Work(cfg, decode_timeout_s, finish=save)
        output = Output(
            manifest,
            overwrite=overwrite,
            retry_failed=retry_failed,
            keep_records=keep_records,
            on_record=on_record,
            storage_options=cfg.storage_options,
            cache_dir=cache_dir,
        )
        yield from stream(eng, (_task(item) for item in inputs), work, output, summary, t0)
        return summary

    return run()


sample = eager(
    iter_sample,
    "sample",
    """Sample every clip of every input under ``paths`` and write them to ``out_dir``.

    ``out_dir/manifest.jsonl`` (``format="parquet"``: ``manifest.parquet``) gets one record
    per clip. A re-run skips clips whose ``ok`` record is already there (same source file
    and settings; ``retry_failed=False``: failed ones too) and its new records replace the
    old ones of the same clips; ``overwrite`` starts afresh.
    ``cfg`` is a :class:`SampleConfig`; an int is its ``n`` (``sample(paths, out, 8)``).
    Failures are records; the run always goes on. ``on_input`` is called once with what
    discovery found, ``on_record`` after each record, ``on_skip`` with each count of clips
    skipped as done (for progress bars); a bad setting is refused (ConfigError) before
    anything runs. ``workers`` processes decode and write the frames (one by default; with
    more, records come in the order they finish), and ``decode_timeout_s`` stops a decoder
    stuck on one input or clip (its clip becomes a failed record, the run goes on).
    ``workers=0`` reads everything in this process, in input order: easy to debug, but
    *unprotected*: no timeout can stop a decoder that hangs there, and a crash in a
    decoding library ends the run.
    ``keep_records=False`` only counts the records (``summary.records`` stays empty): the
    manifest has them all, and a long run does not hold them in memory. ``paths`` may hold
    remote URIs and ``Input`` objects; ``inputs_from`` names manifests (streamed, never
    listed); remote inputs are staged under ``cache_dir``; ``shard="I/N"`` samples only that
    shard of the inputs (see :mod:`framepipe.inputs`). ``engine="ray"`` runs the stages on
    Ray Data (``ray_options``: the cluster, actors and resources; see
    :mod:`framepipe.engine.ray`); ``workers`` is then not used.
    :func:`iter_sample` is the same run, its records handed over one by one as they finish.
    """,
    keep_records=True,
)


def _task(item: Input) -> EngineTask:
    """The task of ``item``: a manifest row's questions join its clips' keys, so that rows
    of one clip with other questions are one record each, with its questions (a row without
    questions keeps the key it had)."""
    return EngineTask(item, {"questions": list(item.questions)} if item.questions else {})


def _save_or_fail(
    job: ClipJob,
    *,
    out_dir: str | Path,
    image_format: str,
    sheet: bool,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Decoder-side: save the clip's images (in a folder, or straight to an object store)
    and add their paths, or fail the clip when they cannot be written."""
    try:
        frames, sheet_path = save_clip_images(
            job, out_dir, image_format=image_format, sheet=sheet, storage_options=storage_options
        )
    except OutputError as exc:
        job.fail(exc)
        return
    job.add(frames=frames, contact_sheet=sheet_path)
