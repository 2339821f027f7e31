"""What every run shares: the skeleton ``discover -> notes -> engine -> writer -> summary``.

A run (``sample``, ``caption``) starts with :func:`begin` (settings checked, the engine
opened, the inputs found: the notes about paths not taken are logged and handed to
``on_input``), says what to do with every clip (a :class:`~framepipe.engine.Work`) and
yields from :func:`stream`: the engine yields each clip's record, which is written
(:class:`Output`: resuming what the output holds), counted in the :class:`RunSummary` and
given to ``on_record``. Resume and writing are the run's alone, the same on every engine.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from framepipe.config import SampleConfig
from framepipe.discovery import Input, InputPaths, Skipped
from framepipe.engine import Engine, EngineOptions, EngineTask, Resume, Work, open_engine
from framepipe.errors import OutputError, one_line_error
from framepipe.extras import check_extras
from framepipe.inputs import DefaultQuestions, Shard, collect_inputs, possible_kinds
from framepipe.inputs.remote import is_remote
from framepipe.output import (
    RecordWriter,
    check_output,
    contact_sheet,
    format_of,
    ledger_of,
    open_writer,
    read_output,
    record_files,
    write_frames,
    writer_target,
)
from framepipe.output.remote import RemoteOutput, join, save_image
from framepipe.records import ClipJob, InputPlan
from framepipe.types import ClipResult
from framepipe.utils import safe_stem, stable_digest

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

OnInput = Callable[[Sequence[Input] | Iterator[Input], Sequence[Skipped]], None]
"""Called once with what discovery found: the inputs, and the paths not taken (notes). The
inputs are an iterator when they stream (a manifest): count them only if ``Sized``, and
never consume them."""
OnRecord = Callable[[ClipResult], None]
"""Called after each record is written (for progress bars)."""


@dataclass
class RunSummary:
    """What a run did; ``failed`` lists ``(source, error)`` pairs."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[Skipped] = field(default_factory=list)
    elapsed_s: float = 0.0
    records: list[ClipResult] = field(default_factory=list, repr=False)
    """The records written (``keep_records``); left out of the repr, which a notebook shows
    for a summary (thousands of records would be pages of text)."""
    output: Path | str | None = None
    """The records file (a URI for one in an object store; None: nothing written)."""

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


def check_run(
    cfg: SampleConfig, output: str | Path | None, format: str | None = None, part: str | None = None
) -> None:
    """What a run checks as it is called, before it starts (its generator made, nothing
    run): a bad setting (``cfg``, the extra that the records format needs) and an ``output``
    that cannot be written (see :func:`~framepipe.output.check_output`) are refused."""
    cfg.check()
    if output is not None:
        check_extras(format=format_of(writer_target(output, format, part)))
        check_output(output, cfg.storage_options)


def begin(
    paths: InputPaths,
    cfg: SampleConfig,
    engine: str,
    options: EngineOptions,
    *,
    on_input: OnInput | None = None,
    inputs_from: str | Path | Iterable[str | Path] | None = None,
    cache_dir: str | Path | None = None,
    shard: Shard | str | tuple[int, int] | None = None,
    default_questions: DefaultQuestions | None = None,
) -> tuple[Engine, list[Input] | Iterator[Input], list[Skipped]]:
    """What every run does first, once started (:func:`check_run` checked it as it was
    called): the engine opens (a cluster engine joins its cluster now); the inputs under
    ``paths`` and in the manifests ``inputs_from`` are found, those of ``shard`` (``"I/N"``)
    only, with the notes about paths not taken (logged, and passed to ``on_input`` with the
    inputs); the source options are checked against the kinds found.
    A run that asks questions gives its ``default_questions`` (asked where a manifest row
    has none): a row asking just those is the same input as one asking none.
    The inputs are a list, or an iterator when they stream (a manifest; ``paths`` given as
    an iterator): it has no ``len()`` and is read once, by the engine (see
    :func:`framepipe.inputs.collect_inputs`)."""
    opened = open_engine(engine, options)
    try:
        inputs, notes = collect_inputs(
            paths,
            inputs_from=inputs_from,
            kind=cfg.kind,
            cache_dir=cache_dir,
            shard=shard,
            default_questions=default_questions,
        )
        if on_input is not None:
            on_input(inputs, notes)
        if isinstance(inputs, list):
            cfg.check([k for i in inputs if not i.error for k in possible_kinds(i, cfg.kind)])
    except BaseException:
        opened.close()
        raise
    return opened, inputs, notes


@dataclass(frozen=True)
class Output:
    """Where a run writes its records, and how it resumes."""

    path: str | os.PathLike[str] | None
    """A records file, or a folder of part files (a path ending with ``/`` says so: see
    :func:`framepipe.output.open_writer`), or a URI in an object store (its records file
    is published whole at the end: :mod:`framepipe.output.remote`); None: nothing is
    written (the records are only returned)."""
    format: str | None = None
    """``jsonl`` or ``parquet`` (None: from the file's suffix)."""
    part: str | None = None
    """The part file's name in a folder output."""
    overwrite: bool = False
    """Start afresh (the old records are dropped once the first new one is written)."""
    retry_failed: bool = True
    """Whether clips with a ``failed`` record are run again."""
    keep_records: bool = True
    """Whether the summary keeps the records."""
    on_record: OnRecord | None = None
    """Called with each record once it is written."""
    storage_options: dict[str, Any] | None = None
    """fsspec options of an output in an object store."""
    cache_dir: str | os.PathLike[str] | None = None
    """Where an output in an object store is staged (default: the remote inputs' cache)."""

    def remote(self) -> RemoteOutput | None:
        """The output in an object store (a URI ending with ``/``: its part file)."""
        uri = str(self.path) if self.path is not None else ""
        if not is_remote(uri):
            return None
        if uri.endswith("/"):
            fmt = self.format or "jsonl"
            uri = join(uri, f"part-{self.part or 0}.{fmt}")
        return RemoteOutput(
            uri, self.format, storage_options=self.storage_options, cache_dir=self.cache_dir
        )


class HeldPlans:
    """Input plans on their way to the ledger, each held until every clip of its input has
    a record in the output (written by this run, or done before it). A plan in the ledger
    supersedes the records of the input's earlier versions (see
    :mod:`framepipe.output.compact`), and an engine hands it on once the input is read,
    which may be before its clips' records come (they wait in a batch to be answered): a
    run stopped between would leave neither version's records of those clips. Held, a
    stopped run keeps the earlier version's records, and a plan whose clips never all get
    a record is never written (a missing plan costs reopening the input, never a record).
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[Any]] = {}  # clip key -> [plan, its clips still to come]
        self._failed: set[str] = set()  # failed records written (not done keys)

    def add(self, plan: InputPlan, writer: RecordWriter) -> None:
        """``plan`` to the ledger now if its clips all have records, else once they do."""
        todo = {k for k in plan.clips if not writer.is_done(k) and k not in self._failed}
        if not todo:
            writer.plan(plan)
            return
        entry = [plan, len(todo)]
        for k in todo:
            self._waiting[k] = entry
        self._failed -= set(plan.clips)

    def written(self, rec: ClipResult, writer: RecordWriter) -> None:
        """``rec`` is in the output: a plan waiting for it alone goes to the ledger."""
        if rec.key is None:
            return
        entry = self._waiting.pop(rec.key, None)
        if entry is None:
            if rec.status != "ok":
                self._failed.add(rec.key)
            return
        entry[1] -= 1
        if entry[1] == 0:
            writer.plan(entry[0])


def stream(
    engine: Engine,
    tasks: Iterable[EngineTask],
    work: Work,
    out: Output,
    summary: RunSummary,
    t0: float,
) -> Iterator[ClipResult]:
    """Run ``tasks`` on ``engine`` and write every record to ``out``, yielding each once it
    is written, counted and given to ``on_record``: a re-run skips the clips the output
    already holds (their keys go to the engine), and its records replace the old ones of
    the same clips. With ``overwrite`` the output is truncated only when the first record
    comes (a model that fails to load leaves it as it was). The engine does the next clips'
    work only as the caller asks for their records (decoding runs at most its prefetch
    ahead). Then (also on an error, and when the caller closes the generator: a ``break``)
    the engine is closed, an output in an object store is published, and ``summary`` gets
    its skipped count and the time since ``t0`` (``time.perf_counter()``). A run stopped
    before its first record removes the output it created, and the folders it made for it."""
    writer: RecordWriter | None = None
    created = stopped = False
    made: list[Path] = []  # folders made for the output (removed with an empty one)
    plans: list[InputPlan] = []  # until the writer is open (``overwrite``)
    held = HeldPlans()  # until their clips' records are written
    path, part, fmt, remote = out.path, out.part, out.format, out.remote()
    records: Iterator[ClipResult] | None = None

    def on_plan(plan: InputPlan) -> None:
        if writer is not None:
            held.add(plan, writer)
        elif path is not None:
            plans.append(plan)

    try:
        if remote is not None:  # staged here, published at the end
            path, fmt = remote.fetch(overwrite=out.overwrite), remote.format
            part = f"run-{uuid.uuid4().hex[:12]}"
        if path is not None:
            target = writer_target(path, fmt, part)
            created, made = not record_files(target), missing_folders(target.parent)
            if not out.overwrite:
                writer = open_writer(path, fmt, part=part, retry_failed=out.retry_failed)
        resume = Resume(writer.done if writer is not None else (), on_plan)
        records = engine.run(tasks, work, resume)
        for rec in records:
            if writer is None and path is not None:
                writer = open_writer(
                    path, fmt, part=part, overwrite=True, retry_failed=out.retry_failed
                )
                for plan in plans:
                    held.add(plan, writer)
                plans.clear()
            if writer is not None:
                writer.write(rec)
                held.written(rec, writer)
            summary.add(rec, keep=out.keep_records)
            if out.on_record is not None:
                out.on_record(rec)
            yield rec
    except BaseException:
        stopped = True
        if writer is not None and created:
            discard_if_empty(writer, made)  # e.g. the weights failed to load
        elif created:
            remove_empty(made)
        raise
    finally:
        if records is not None and hasattr(records, "close"):
            records.close()  # the engine's own clean-up, before its times are read
        engine.close()
        if writer is not None:
            finish_output(writer.close, stopped)
        if remote is not None:
            finish_output(remote.publish, stopped)
        summary.skipped = engine.skipped
        summary.elapsed_s = time.perf_counter() - t0


def eager(
    lazy: Callable[P, Generator[Any, None, R]], name: str, doc: str, **defaults: Any
) -> Callable[P, R]:
    """The run ``lazy`` (a generator function of records) as ``name``, documented by ``doc``:
    run to its end, it returns the summary. Its signature (``help``, ``inspect``, mypy), and a
    bad call's TypeError, are ``lazy``'s, with ``defaults`` (e.g. ``keep_records=True``)."""
    sig = inspect.signature(lazy)
    params = [
        p.replace(default=defaults.pop(p.name)) if p.name in defaults else p
        for p in sig.parameters.values()
    ]
    if defaults:
        raise TypeError(f"{lazy.__name__} has no parameter {next(iter(defaults))!r}")
    ret = sig.return_annotation  # "Generator[record, None, summary]" -> "summary"
    if isinstance(ret, str):
        ret = ret.rpartition(",")[2].strip(" ]")
    sig = sig.replace(parameters=params, return_annotation=ret)

    @functools.wraps(lazy)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{run.__qualname__}() {exc}") from None  # bind names none
        bound.apply_defaults()
        with contextlib.closing(lazy(*bound.args, **bound.kwargs)) as gen:  # also on Ctrl-C
            while True:
                try:
                    next(gen)
                except StopIteration as end:
                    return end.value

    run.__name__ = name
    run.__qualname__ = f"{lazy.__qualname__.rpartition('.')[0]}.{name}".lstrip(".")
    run.__doc__ = inspect.cleandoc(doc)
    run.__signature__ = sig  # type: ignore[attr-defined]
    del run.__wrapped__  # help() shows ``sig``, not ``lazy``'s own
    return run


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that are not there yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; leave the others."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def finish_output(step: Callable[[], None], stopped: bool) -> None:
    """Run ``step``, closing a writer or publishing to the store what a run wrote; when the
    run stopped on an error (or Ctrl-C), its failure (a full disk, an unreachable store: the
    records stay, and the next run tidies or publishes them) is logged, not raised over what
    stopped the run."""
    try:
        step()
    except OutputError as exc:
        if not stopped:
            raise
        log.error("%s", exc)


def discard_if_empty(writer: RecordWriter, made: Iterable[Path] = ()) -> None:
    """Close ``writer`` and remove its file when it holds no record (a run that failed
    before writing any, on an output it created), and then the folders ``made`` for it
    that are left empty, as a run stops on an error."""
    finish_output(writer.close, stopped=True)
    with contextlib.suppress(OSError):
        if not any(True for _ in read_output(writer.path)):
            writer.path.unlink()
            ledger_of(writer.path).unlink(missing_ok=True)
            remove_empty(made)


def clip_dir_name(source: str, clip_index: int) -> str:
    """A folder name per clip: readable stem, a digest of the full path (no collisions); a
    URI's stem is its path's file name, never its query (a signed URL's token)."""
    stem = safe_stem(Path(urlsplit(source).path if is_remote(source) else source).name, 60)
    return f"{stem}-{stable_digest(source, 8)}/clip_{clip_index:03d}"


def save_clip_images(
    job: ClipJob,
    out_dir: str | Path,
    *,
    image_format: str = "jpg",
    sheet: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> tuple[list[str], str | None]:
    """Write the job's frames (and contact sheet) in the clip's folder under ``out_dir`` (a
    folder, or a URI: straight to the store); returns their paths relative to ``out_dir``
    (the sheet's None without ``sheet``). OutputError, naming ``out_dir``, when they cannot
    be written (a full disk)."""
    assert job.batch is not None
    name = clip_dir_name(job.source, (job.clip or {}).get("index", 0))
    folder = join(out_dir, name)
    try:
        frames = write_frames(
            job.batch, folder, out_dir, fmt=image_format, storage_options=storage_options
        )
        if not sheet:
            return frames, None
        save_image(
            contact_sheet(job.batch),
            join(folder, "contact_sheet.jpg"),
            storage_options,
            format="JPEG",
            quality=90,
        )
    except OSError as exc:
        why = exc.strerror or one_line_error(exc)
        raise OutputError(f"cannot write frames in {out_dir} ({why})") from exc
    return frames, f"{name}/contact_sheet.jpg"
