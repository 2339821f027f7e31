"""The runs on the Ray engine (``engine="ray"``): the driver's side of ``sample`` and
``caption``.

The driver finds the inputs, reads the resume keys already written, runs the stage graph
(:class:`framepipe.engine.ray.RayEngine`) and writes each record it gets back, verbatim as
the local engine's runs write them, to a part file of its own
(``OUTPUT.parts/part-<run>.jsonl``, appended and fsynced a record at a time, so a killed
driver leaves every record it received). At the end the parts and the existing output are
merged into ``OUTPUT`` (one record per clip, the latest winning; a temporary file moved into
place) and the parts are removed. A re-run after a killed driver skips every clip whose
``ok`` record is in the output *or* in the parts of the killed run, and merges them too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.engine.local import EngineTask
from framepipe.output import is_folder_output, merge, open_writer, read_done_keys
from framepipe.output.store import PART_PREFIX
from framepipe.runs.common import OnRecord, Recorder, RunSummary
from framepipe.types import ClipResult

if TYPE_CHECKING:
    from framepipe.engine.ray import RayEngine, RayOptions
    from framepipe.engine.worker import Prepare

log = logging.getLogger(__name__)


def parts_dir(output: Path) -> Path:
    """Where the Ray engine's part files of the records file ``output`` go: beside it in a
    ``sample`` folder (``manifest.*``), else in ``OUTPUT.parts/``."""
    if output.stem == "manifest":
        return output.parent
    return output.with_name(output.name + ".parts")


def part_files(parts: Path) -> list[Path]:
    """The part files in ``parts`` (``part-*.jsonl``)."""
    return sorted(parts.glob(f"{PART_PREFIX}*.jsonl")) if parts.is_dir() else []


@dataclass(frozen=True)
class RayOutput:
    """Where a run on the Ray engine puts its records: the output options of ``sample()`` and
    :meth:`Pipeline.run <framepipe.runs.caption.Pipeline.run>`, passed on as they came."""

    output: Path | None
    """The records file (part files, then merged into it) or folder (a part file there)."""
    overwrite: bool = False
    """Start afresh: the existing records and a killed run's parts are not resumed."""
    format: str | None = None
    """The merged file's format (None: by its suffix)."""
    retry_failed: bool = True
    """Whether clips with a ``failed`` record are run again."""
    part: str | None = None
    """The part file's name in a folder output (None: the run's time and process id)."""
    keep_records: bool = True
    """Whether the summary keeps the records."""
    on_record: OnRecord | None = None
    """Called with each record once it is written."""


def run_on_ray(
    engine: RayEngine,
    tasks: Iterable[EngineTask],
    out: RayOutput,
    summary: RunSummary,
    *,
    t0: float,
    on_first: Callable[[ClipResult], None] | None = None,
) -> RunSummary:
    """Run ``tasks`` on ``engine``; its records go to ``out.output`` (a file: part files, then
    merged into it in ``out.format``; a folder output: a part file there) and into
    ``summary``. ``on_first`` sees the first record (before it is written)."""
    output, overwrite, retry_failed, part = out.output, out.overwrite, out.retry_failed, out.part
    writer = None
    parts: Path | None = None
    folder = output is not None and is_folder_output(output)
    if output is not None:
        parts = output if folder else parts_dir(output)
        if overwrite:
            for p in part_files(parts):  # a killed run's parts: started afresh
                p.unlink()
        seen = [p for p in ([] if folder else [output]) + [parts] if p.exists()]
        keys = set()
        if seen and not overwrite:
            keys = read_done_keys(seen, retry_failed=retry_failed)
        engine.done_keys = keys
        run = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
        name = part if folder and part else run
        writer = open_writer(parts, "jsonl", part=name, retry_failed=retry_failed)
    record = Recorder(summary, writer, keep=out.keep_records, on_record=out.on_record)
    first = True
    try:
        for rec in engine.run(tasks):
            if first and on_first is not None:
                on_first(rec)
            first = False
            record(rec)
    finally:
        if writer is not None:
            writer.close()
        summary.skipped = engine.skipped
    if output is not None and parts is not None and not folder:
        found = part_files(parts)
        old = [output] if output.exists() and not overwrite else []
        if found or old:
            merge([*old, *found], output, out.format)
        for p in found:
            p.unlink()
        if parts != output.parent:
            with contextlib.suppress(OSError):
                parts.rmdir()
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def caption_on_ray(
    pipe: Any,
    options: RayOptions,
    tasks: Iterable[EngineTask],
    out: RayOutput,
    summary: Any,
    *,
    prepare: Prepare | None,
    gen_json: dict[str, Any],
    t0: float,
    on_skip: Callable[[int], None] | None = None,
) -> Any:
    """:meth:`Pipeline.run <framepipe.runs.caption.Pipeline.run>` (``pipe``; ``summary`` its
    CaptionSummary: typed loosely, as runs.caption imports this module) on the Ray engine, once
    the model's config is checked (``pipe.check``): the model loads in each generation
    actor, never in the driver; ``summary.model`` is the first record's."""
    from framepipe.engine.ray import RayEngine
    from framepipe.engine.ray_generate import GenerateSpec
    from framepipe.engine.ray_read import frame_reduce_for

    spec = getattr(pipe, "_spec", None)
    if getattr(spec, "random_weights", False):
        log.warning("%s has random weights: its answers are not captions", pipe.model_config.model)
    batch = options.batch_size or max(1, int(getattr(pipe.settings, "batch_size", 1) or 1))
    gen = GenerateSpec(
        model=pipe.model_config,
        settings=pipe.settings,
        questions=tuple(pipe.questions) if pipe.questions else None,
        system=pipe.system,
        gen_json=gen_json,
        batch_size=batch,
        generator=getattr(pipe, "_generator", None),
    )
    keywords = getattr(prepare, "keywords", {})
    output = out.output
    if output is not None and not is_folder_output(output) and keywords.get("rel_to"):
        # frames are saved relative to the part files' folder: merge makes them relative
        # to the output's again
        assert isinstance(prepare, functools.partial)
        rel = parts_dir(output).resolve()
        prepare = functools.partial(prepare.func, *prepare.args, **{**keywords, "rel_to": rel})
    engine = RayEngine(
        pipe.sample,
        options,
        pipe.decode_timeout_s,
        prepare=prepare,
        send_frames=True,
        generate=gen,
        reduce=frame_reduce_for(spec),
        on_skip=on_skip,
    )

    def first(rec: ClipResult) -> None:
        summary.model = rec.model

    def counted(rec: ClipResult) -> None:  # generation time, summed over the actors' clips
        summary.generate_s += float(rec.timings_s.get("generate_s", 0.0))
        if out.on_record is not None:
            out.on_record(rec)

    run_on_ray(engine, tasks, replace(out, on_record=counted), summary, t0=t0, on_first=first)
    return summary
