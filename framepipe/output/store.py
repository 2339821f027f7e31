"""Outputs as the next tool reads them: one file (JSONL or Parquet) or a folder of part files,
and ``merge``. The API every run and engine writes records through::

    from framepipe.output import merge, open_writer, read_output

    with open_writer("results.jsonl") as w:           # or "results.parquet", or "results/"
        for rec in records:
            if not w.is_done(rec.key):
                w.write(rec)                          # appended, fsynced
    # closed: one record per clip (compacted atomically)

    with open_writer("results/", part="00003") as w:  # results/part-00003.jsonl
        ...
    merge(["results/"], "all.parquet")                # latest record per clip, atomic
                                                      # (framepipe.output.merge)

- ``open_writer(path, format=None, *, part=None, overwrite=False, retry_failed=True)`` ->
  a writer with ``.write(record)``, ``.done_keys`` (a set of resume keys), ``.is_done(key)``,
  ``.plan(input_plan)`` (kept in the file's ledger, :mod:`~framepipe.output.ledger`),
  ``.done`` (the done keys and the inputs whose clips are all done, for the engine),
  ``.path`` (the file it appends to) and ``.close()``. ``format`` is ``jsonl`` or
  ``parquet`` (default: from the file's suffix, else ``jsonl``). A ``path`` that is a folder
  (or ends with ``/``) gets the part file ``part-<part>.<format>`` (``part`` defaults to
  ``0``); its ``done_keys`` are read from every part in the folder. Give each concurrent
  writer its own ``part``.
- ``record_files(path)``: the records files of an output in write order (a folder: its
  ``part-*`` and ``manifest.*`` files, oldest first by modification time).
- ``read_output(paths)``: the records of one or more outputs, one per clip (the rule of
  :mod:`framepipe.output.compact`: the latest record of a key wins, a failed one never over
  an ``ok`` one).
- ``read_done_keys(paths, retry_failed=True)``: the keys a re-run skips (digests only).
- ``merge(inputs, output, format=None)`` (:mod:`framepipe.output.merge`):
  ``read_output(inputs)`` written to ``output`` atomically (a temporary file moved into
  place), the inputs' ledgers merged into its ledger; ``output`` may be one of the inputs.

In write order, files come oldest first (modification time, then name), records in file
order; a Parquet file's journal (records of a run not folded in yet) comes right after it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from framepipe.errors import ConfigError, OutputError
from framepipe.output.compact import Current, Meta, done_keys, keep_mask
from framepipe.output.jsonl import (
    JsonlWriter,
    atomic_output,
    read_jsonl_meta,
    read_records,
    try_exclusive,
)
from framepipe.output.ledger import Ledger, current_clips, done_inputs, ledger_of
from framepipe.output.parquet import read_parquet, read_parquet_meta, write_parquet
from framepipe.records import InputPlan
from framepipe.types import ClipResult
from framepipe.utils import Closing, allow_open_files

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PART_PREFIX = "part-"
MANIFEST_STEM = "manifest"

PathLike = str | os.PathLike[str]


def is_folder_output(path: PathLike) -> bool:
    """Whether ``path`` names a folder of part files: it ends with ``/``, or is a folder that
    holds part files already (any other folder is not an output)."""
    if str(path).endswith(("/", os.sep)):
        return True
    p = Path(path)
    return p.is_dir() and (any(p.glob(f"{PART_PREFIX}*")) or any(p.glob(f".{PART_PREFIX}*")))


def format_of(path: PathLike, format: str | None = None) -> str:
    """``format`` checked (a file name whose suffix says another is refused: ConfigError), or
    the one the file's suffix says (``jsonl`` when it says none)."""
    named = SUFFIXES.get(Path(path).suffix.lower())
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown output format {format!r} (choose from {FORMATS})")
    if format is not None and named not in (None, format):
        raise ConfigError(f"{path}: a {named} file name for {format} output")
    if format == "parquet" and named is None and Path(path).name:  # read back as JSONL
        raise ConfigError(f"{path}: parquet output needs a .parquet file name")
    return format or named or "jsonl"


def journal_of(path: Path) -> Path:
    """Where a Parquet file's records wait until they are folded in (hidden, JSONL)."""
    return path.with_name(f".{path.name}.journal")


def part_path(folder: PathLike, part: str | int, format: str = "jsonl") -> Path:
    """The part file ``part`` of a folder output."""
    name = str(part)
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ConfigError(f"bad part name {name!r} (a plain file-name piece)")
    return Path(folder) / f"{PART_PREFIX}{name}.{format_of('', format)}"


# -- reading --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Unit:
    """A records file, with its journal for a Parquet file."""

    path: Path
    format: str

    @property
    def mtime_ns(self) -> int:
        times = [p.stat().st_mtime_ns for p in self.files()]
        return max(times) if times else 0

    def files(self) -> list[Path]:
        out = [self.path] if self.path.exists() else []
        if self.format == "parquet" and journal_of(self.path).exists():
            out.append(journal_of(self.path))
        return out

    @property
    def ledger(self) -> Path:
        return ledger_of(self.path)

    def open(self, files: contextlib.ExitStack) -> _Open:
        """Its files opened (closed with ``files``), the journal first: a fold moves the
        folded file into place before it removes the journal, so the file opened after
        the journal holds the journal's records or comes before them, never lacks them
        (read twice, a record is the same record: the latest of its key wins). Past the
        open-file limit (``ulimit -n``; thousands of part files) it is read by name."""
        names = [journal_of(self.path)] if self.format == "parquet" else []
        try:
            handles = [_open_if_there(p, files) for p in [*names, self.path]]
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise OutputError(f"{exc.filename}: cannot read ({exc.strerror})") from exc
            return _Open(self, None, None, by_name=True)
        return _Open(self, handles[-1], handles[0] if len(handles) > 1 else None)


def _open_if_there(path: Path, files: contextlib.ExitStack) -> BinaryIO | None:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed with ``files``
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return files.enter_context(fh)


@dataclass(frozen=True)
class _Open:
    """A unit with its files open: every pass of a read reads these same files, so a
    compaction or a fold that moves a new file into place meanwhile (``os.replace``: the
    open file stays readable) changes nothing of what the read sees but appended records,
    which it leaves out (see :func:`kept_records`). No lock: a reader never holds up or
    skips a run's compaction, and a killed reader leaves nothing behind."""

    unit: _Unit
    fh: BinaryIO | None
    journal: BinaryIO | None
    by_name: bool = False  # (not open: the open-file limit was reached)

    def metas(self) -> Iterator[Meta]:
        p, fh, read = self.unit.path, self.fh, self.fh is not None or self.by_name
        if self.unit.format == "parquet":
            if read:
                yield from read_parquet_meta(p, fh)
            if self.journal is not None or self.by_name:
                yield from read_jsonl_meta(journal_of(p), self.journal)
        elif read:
            yield from read_jsonl_meta(p, fh)

    def records(self) -> Iterator[dict[str, Any]]:
        """Its records, on a second pass (its metas were read first, with the warnings)."""
        p, fh, read = self.unit.path, self.fh, self.fh is not None or self.by_name
        if self.unit.format == "parquet":
            if read:
                yield from read_parquet(p, fh)
            if self.journal is not None or self.by_name:
                yield from read_records(journal_of(p), warn=False, fh=self.journal)
        elif read:
            yield from read_records(p, warn=False, fh=fh)


def records_name(name: str) -> tuple[str, str] | None:
    """For a file name in a folder output: the records file it belongs to (itself, or the
    file of a journal, ``.NAME.journal``) and that file's format; None for any other name
    (a ledger, frames, notes)."""
    if name.startswith(".") and name.endswith(".journal"):  # a journal without its file
        name = name[1 : -len(".journal")]
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".parquet") and (
        name.startswith(PART_PREFIX) or Path(name).stem == MANIFEST_STEM
    ):
        return name, SUFFIXES[suffix]
    return None


def _units(path: PathLike) -> list[_Unit]:
    p = Path(path)
    if not p.is_dir():
        return [_Unit(p, format_of(p))]
    found: dict[Path, _Unit] = {}
    for child in p.iterdir():
        named = records_name(child.name)
        if named is not None:
            found[child.with_name(named[0])] = _Unit(child.with_name(named[0]), named[1])
    return sorted(found.values(), key=lambda u: (u.mtime_ns, u.path.name))


def no_records_in(folder: PathLike) -> OutputError:
    """The error for a folder given for its records that holds no records file."""
    return OutputError(
        f"{folder}: no records file in the folder (part-*.jsonl or part-*.parquet files, "
        "or a sample output's manifest.jsonl or manifest.parquet)"
    )


def record_files(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """The records files of the outputs ``paths``, in write order (journals included)."""
    return [f for u in ordered_units(paths) for f in u.files()]


def ordered_units(paths: PathLike | Iterable[PathLike]) -> list[_Unit]:
    """The records files of the outputs ``paths`` (each with its journal), in write order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    units: dict[Path, _Unit] = {}
    for p in paths:
        for u in _units(p):
            units.setdefault(u.path.resolve(), u)
    return sorted(units.values(), key=lambda u: (u.mtime_ns, u.path.name))


def _metas(units: Sequence[_Open], counts: list[int]) -> Iterator[Meta]:
    """The metas of ``units``' records; how many each unit held is appended to ``counts``."""
    for u in units:
        counts.append(0)
        for m in u.metas():
            counts[-1] += 1
            yield m


def _current(units: Sequence[_Unit], ledgers: Iterable[Path] | None = None) -> Current:
    return current_clips(ledgers or [u.ledger for u in units], digested=True)


@contextlib.contextmanager
def kept_records(
    units: Sequence[_Unit], ledgers: Iterable[Path] | None = None
) -> Iterator[tuple[list[bool], Iterator[tuple[_Unit, dict[str, Any]]]]]:
    """Which records of ``units`` (in write order) survive, by the inputs' latest versions in
    ``ledgers`` (by default the units' own), and the survivors with their unit, read again
    from the same open files (:class:`_Open`; closed when the context ends): of each unit
    as many as first read (what a run appended since, nothing says of)."""
    with contextlib.ExitStack() as files:
        room = allow_open_files(2 * len(units)) // 2  # (past it: read by name)
        opened = [
            u.open(files) if i < room else _Open(u, None, None, True) for i, u in enumerate(units)
        ]
        counts: list[int] = []
        keep = keep_mask(_metas(opened, counts), _current(units, ledgers))
        read = (
            (o.unit, r) for o, n in zip(opened, counts) for r in itertools.islice(o.records(), n)
        )
        yield keep, itertools.compress(read, keep)


def read_output(paths: PathLike | Iterable[PathLike]) -> Iterator[dict[str, Any]]:
    """The records of the outputs ``paths`` (files or folders), one per clip, in write
    order (see :mod:`framepipe.output.compact`)."""
    with kept_records(ordered_units(paths)) as (_, survivors):
        for _, rec in survivors:
            yield rec


def read_done_keys(paths: PathLike | Iterable[PathLike], *, retry_failed: bool = True) -> set[str]:
    """The resume keys a re-run over the outputs ``paths`` skips (see
    :func:`framepipe.output.compact.done_keys`)."""
    units = ordered_units(paths)
    metas = _metas([_Open(u, None, None, by_name=True) for u in units], [])  # (one pass)
    return done_keys(metas, retry_failed=retry_failed, current=_current(units))


# -- writing --------------------------------------------------------------------------------
class ParquetWriter(Closing):
    """Records into a Parquet file: appended to its JSONL journal during the run (fsynced,
    so a kill keeps them), folded into the file at :meth:`close` (one record per clip,
    written beside it and moved into place) when no other writer has the journal open."""

    format = "parquet"

    def __init__(
        self,
        path: PathLike,
        *,
        overwrite: bool = False,
        retry_failed: bool = True,
        done_keys: Iterable[str] | None = None,
        fsync: bool = True,
        ledger: Ledger | None = None,
        keep_empty: bool = True,
    ) -> None:
        self.path = Path(path)
        self.journal = journal_of(self.path)
        if overwrite:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.journal.unlink()
        if done_keys is None:
            done_keys = read_done_keys(self.path, retry_failed=retry_failed)
        self._log = JsonlWriter(
            self.journal,
            fsync=fsync,
            retry_failed=retry_failed,
            compact=False,
            done_keys=done_keys,
            ledger=ledger,
            keep_empty=keep_empty and not self.path.exists(),  # (else nothing to fold)
        )
        self.done_keys = self._log.done_keys
        self.done_inputs = self._log.done_inputs

    @property
    def written(self) -> int:
        """Records written by this writer."""
        return self._log.written

    @property
    def done(self) -> dict[str, int]:
        return self._log.done

    def is_done(self, key: str) -> bool:
        return key in self.done_keys

    def plan(self, plan: InputPlan) -> None:
        self._log.plan(plan)

    def write(self, record: ClipResult | dict[str, Any]) -> None:
        self._log.write(record)

    def close(self) -> None:
        """Fold the journal into the Parquet file (see the class); safe to call twice."""
        fh = self._log._fh
        if fh.closed:
            return
        try:
            if try_exclusive(fh) and not (self._log.unused() and not self._log.keep_empty):
                ledger = self._log.ledger
                fold_parquet(self.path, ledger.scope if ledger is not None else None)
        except OSError as exc:  # (a full disk): the journal keeps them, the next run folds
            why = f"{exc.strerror or exc}; its records wait in {self.journal.name} for the next run"
            raise OutputError(f"{self.path}: cannot write ({why})") from exc
        finally:
            self._log.close()


def fold_parquet(path: PathLike, ledgers: Iterable[Path] | None = None) -> int:
    """Fold a Parquet file's journal into it (one record per clip, atomically); returns how
    many records the file holds. ``ledgers``: those that say each input's latest version (by
    default its own; a part file's folder holds more). The caller holds the journal's
    lock."""
    p = Path(path)
    unit = _Unit(p, "parquet")
    journal = journal_of(p)
    if p.exists() and not journal.exists():
        return -1
    with kept_records([unit], ledgers) as (_, kept), atomic_output(p) as tmp:
        n = write_parquet((r for _, r in kept), tmp)
    journal.unlink(missing_ok=True)
    return n


RecordWriter = JsonlWriter | ParquetWriter
"""What :func:`open_writer` returns."""


def writer_target(path: PathLike, format: str | None = None, part: str | int | None = None) -> Path:
    """The file :func:`open_writer` appends to (checks the format and the part name first:
    ConfigError)."""
    if is_folder_output(path) or part is not None:
        return part_path(path, 0 if part is None else part, format_of("", format))
    format_of(path, format)
    return Path(path)


def open_writer(
    path: PathLike,
    format: str | None = None,
    *,
    part: str | int | None = None,
    overwrite: bool = False,
    retry_failed: bool = True,
    fsync: bool = True,
) -> RecordWriter:
    """A writer of records into the output ``path`` (see the module). ``overwrite`` starts
    the file (or the part) afresh; ``retry_failed=False`` counts failed records as done."""
    target = writer_target(path, format, part)
    folder = part is not None or is_folder_output(path)
    fmt = format_of(target)
    if folder:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the output folder ({exc})") from exc
    scope = target.parent if folder else target
    done: set[str] | None = None  # a single JSONL file reads its own (see JsonlWriter)
    if overwrite:
        done = set()
    elif folder or fmt == "parquet":
        done = read_done_keys(scope, retry_failed=retry_failed)
    ledgers = [u.ledger for u in ordered_units(scope)] if folder else []
    ledger = Ledger(target, overwrite=overwrite, fsync=fsync, scope=ledgers)
    kw: dict[str, Any] = {"overwrite": overwrite, "retry_failed": retry_failed, "fsync": fsync}
    kw["keep_empty"] = not folder  # a part a run made and wrote nothing to goes
    writer: RecordWriter
    if fmt == "parquet":
        writer = ParquetWriter(target, done_keys=done, ledger=ledger, **kw)
    else:
        writer = JsonlWriter(target, done_keys=done, ledger=ledger, **kw)
    if not overwrite:
        writer.done_inputs.update(done_inputs({*ledgers, ledger.path}, writer.done_keys))
    return writer
