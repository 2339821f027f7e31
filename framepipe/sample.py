"""``sample``: choose and save n frames per clip, with a contact sheet and a manifest.

The Python API behind ``framepipe sample``::

    from framepipe import SampleConfig, sample
    summary = sample(["videos/"], "out/", SampleConfig(n=8))
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from framepipe.config import SampleConfig
from framepipe.discover import Input, Skipped, discover
from framepipe.engine.local import DEFAULT_DECODE_TIMEOUT_S, EngineTask, LocalEngine
from framepipe.errors import OutputError, one_line_error
from framepipe.output import JsonlWriter, contact_sheet, write_frames
from framepipe.stages import ClipJob
from framepipe.types import ClipResult
from framepipe.utils import safe_stem, stable_digest

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


@dataclass
class RunSummary:
    """What a run did; ``failed`` lists ``(source, error)`` pairs."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[Skipped] = field(default_factory=list)
    elapsed_s: float = 0.0
    records: list[ClipResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, rec: ClipResult, *, keep: bool = True) -> None:
        """Count one written record (and keep it in ``records`` when ``keep``); a failed
        record's one-line error is logged as it happens."""
        if keep:
            self.records.append(rec)
        if rec.status == "ok":
            self.done += 1
        else:
            self.failed.append((rec.source, rec.error or "failed"))
            log.error("%s", rec.error)


def clip_dir_name(source: str, clip_index: int) -> str:
    """A folder name per clip: readable stem, a digest of the full path (no collisions)."""
    stem = safe_stem(Path(source).name, 60)
    return f"{stem}-{stable_digest(source, 8)}/clip_{clip_index:03d}"


def save_clip_images(
    job: ClipJob, out_dir: Path, *, image_format: str = "jpg", sheet: bool = True
) -> None:
    """Write the job's frames (and contact sheet) under ``out_dir``; fill the record's paths."""
    assert job.batch is not None
    rec = job.record
    folder = out_dir / clip_dir_name(rec.source, (rec.clip or {}).get("index", 0))
    rec.frames = write_frames(job.batch, folder, out_dir, fmt=image_format)
    if sheet:
        img = contact_sheet(job.batch)
        p = folder / "contact_sheet.jpg"
        img.save(p, quality=90)
        rec.contact_sheet = p.relative_to(out_dir).as_posix()


def sample(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    cfg: SampleConfig | None = None,
    *,
    overwrite: bool = False,
    image_format: str = "jpg",
    sheets: bool = True,
    workers: int = 0,
    decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
    keep_records: bool = True,
    on_input: Callable[[Sequence[Input], Sequence[Skipped]], None] | None = None,
    on_record: Callable[[ClipResult], None] | None = None,
) -> RunSummary:
    """Sample every clip of every input under ``paths`` and write them to ``out_dir``.

    ``out_dir/manifest.jsonl`` gets one record per clip. A re-run skips clips whose ``ok``
    record is already there (same source file and settings); ``overwrite`` starts afresh.
    Failures are records; the run always goes on. ``on_input`` is called once with what
    discovery found, ``on_record`` after each record (for progress bars). ``workers`` > 0
    decodes and writes the frames in that many processes (records then come in the order
    they finish; ``decode_timeout_s`` stops a decoder stuck on one clip).
    ``keep_records=False`` only counts the records (``summary.records`` stays empty): the
    manifest has them all, and a long run does not hold them in memory.
    """
    cfg = cfg or SampleConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    inputs, notes = discover(paths, kind=cfg.kind)
    for note in notes:
        log.info("skipping %s: %s", note.path, note.reason)
    if on_input is not None:
        on_input(inputs, notes)
    summary = RunSummary(notes=list(notes))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create output folder ({exc.strerror or exc})") from exc
    with JsonlWriter(out / MANIFEST, overwrite=overwrite) as writer:
        engine = LocalEngine(
            cfg,
            workers=workers,
            decode_timeout_s=decode_timeout_s,
            done_keys=writer.done_keys,
            prepare=functools.partial(
                _save_or_fail, out_dir=out, image_format=image_format, sheet=sheets
            ),
            send_frames=False,
        )
        for job in engine.run(EngineTask(item) for item in inputs):
            rec = job.record
            writer.write(rec)
            summary.add(rec, keep=keep_records)
            if on_record is not None:
                on_record(rec)
        summary.skipped = engine.skipped
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _save_or_fail(job: ClipJob, *, out_dir: Path, image_format: str, sheet: bool) -> None:
    """Save the clip's images; a write error makes the clip a failed record."""
    rec = job.record
    try:
        save_clip_images(job, out_dir, image_format=image_format, sheet=sheet)
    except OSError as exc:
        rec.status = "failed"
        rec.error = f"{rec.source}: cannot write frames ({one_line_error(exc)})"
