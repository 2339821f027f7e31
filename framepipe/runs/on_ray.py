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
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.engine.local import EngineTask
from framepipe.errors import OutputError
from framepipe.output import JsonlWriter, read_records
from framepipe.runs.common import OnRecord, Recorder, RunSummary
from framepipe.types import ClipResult

if TYPE_CHECKING:
    from framepipe.engine.ray import RayEngine, RayOptions
    from framepipe.engine.worker import Prepare

log = logging.getLogger(__name__)


def parts_dir(output: Path) -> Path:
    """Where the Ray engine's part files of ``output`` go."""
    return output.with_name(output.name + ".parts")


def part_files(parts: Path) -> list[Path]:
    """The part files in ``parts``, oldest run first (run names sort by start time)."""
    return sorted(parts.glob("part-*.jsonl")) if parts.is_dir() else []


def done_keys(output: Path) -> set[str]:
    """The keys of the ``ok`` records in ``output`` and in its part files (digests only)."""
    keys: set[str] = set()
    for f in [output, *part_files(parts_dir(output))]:
        for rec in read_records(f):
            if rec.get("status") == "ok" and rec.get("key"):
                keys.add(str(rec["key"]))
    return keys


def merge_parts(output: Path, *, keep_old: bool = True) -> int:
    """Merge ``output`` (unless not ``keep_old``) and its part files into ``output``: one
    record per key, the latest (the last in file order) winning, lines kept verbatim;
    written to a temporary file and moved into place; the parts are then removed. Holds
    only (key -> line) positions in memory. Returns the records written."""
    parts = part_files(parts_dir(output))
    files = ([output] if keep_old and output.exists() else []) + parts
    last: dict[str, tuple[int, int]] = {}
    for fi, f in enumerate(files):
        for li, line in enumerate(_lines(f)):
            key = _key(line)
            if key:
                last[key] = (fi, li)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    written = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for fi, f in enumerate(files):
                for li, line in enumerate(_lines(f)):
                    key = _key(line)
                    if key is None or (key and last.get(key) != (fi, li)):
                        continue
                    fh.write(line if line.endswith("\n") else line + "\n")
                    written += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from exc
    for p in parts:
        p.unlink()
    with contextlib.suppress(OSError):
        parts_dir(output).rmdir()
    return written


def _lines(path: Path) -> Iterable[str]:
    with open(path, encoding="utf-8") as fh:
        yield from fh


def _key(line: str) -> str | None:
    """A record line's key ('' for a record without one, kept as is); None for a line that
    is no record (blank, torn by a kill)."""
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict):
        return None
    return str(rec.get("key") or "")


def run_on_ray(
    engine: RayEngine,
    tasks: Iterable[EngineTask],
    output: Path | None,
    summary: RunSummary,
    *,
    t0: float,
    overwrite: bool = False,
    keep_records: bool = True,
    on_record: OnRecord | None = None,
    on_first: Callable[[ClipResult], None] | None = None,
) -> RunSummary:
    """Run ``tasks`` on ``engine``; its records go to ``output`` (part files, then merged)
    and into ``summary``. ``on_first`` sees the first record (before it is written)."""
    writer = None
    if output is not None:
        parts = parts_dir(output)
        if overwrite:
            for p in part_files(parts):  # a killed run's parts: started afresh
                p.unlink()
        engine.done_keys = set() if overwrite else done_keys(output)
        run = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
        writer = JsonlWriter(parts / f"part-{run}.jsonl")
    record = Recorder(summary, writer, keep=keep_records, on_record=on_record)
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
    if output is not None:
        merge_parts(output, keep_old=not overwrite)
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def caption_on_ray(
    pipe: Any,
    options: RayOptions,
    tasks: Iterable[EngineTask],
    output: Path | None,
    summary: Any,
    *,
    prepare: Prepare | None,
    gen_json: dict[str, Any],
    t0: float,
    overwrite: bool = False,
    keep_records: bool = True,
    on_record: OnRecord | None = None,
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

    run_on_ray(
        engine,
        tasks,
        output,
        summary,
        t0=t0,
        overwrite=overwrite,
        keep_records=keep_records,
        on_record=on_record,
        on_first=first,
    )
    return summary
