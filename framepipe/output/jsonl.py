"""The records file: one JSON line per clip, appended atomically, resumable.

Each record is written with a single ``write`` of one complete line and flushed to the
operating system (and fsynced to disk at least every :data:`~framepipe.utils.SYNC_EVERY_S`), so an
interrupted run leaves every finished record intact; a torn last line (a process killed
mid-write) is detected and dropped on the next open. A re-run reads the keys of the records
already there and skips those clips. At the end of a run the file is compacted to one
record per clip (:func:`compact_jsonl`, the rule in :mod:`framepipe.output.compact`).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from framepipe.errors import OutputError
from framepipe.output.compact import Meta, holds, keep_mask, kept_keys, record_meta
from framepipe.output.ledger import Ledger, current_clips, ledger_of
from framepipe.records import InputPlan
from framepipe.types import ClipResult
from framepipe.utils import (
    Closing,
    NotTextError,
    append_whole,
    json_lines,
    remove_stale_temps,
    sync_due,
    temp_beside,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks between writers
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


HEAD_BYTES = 1 << 16
"""How much of a file's start :func:`check_jsonl` reads."""


def check_jsonl(path: str | Path, *, appending: bool = False, fh: BinaryIO | None = None) -> None:
    """Refuse (:class:`OutputError`, naming the file) a file that is no JSON-lines file at
    all: one whose first line is not text (UTF-8 without NUL bytes; a Parquet file, a video
    under a records file's name) or, ``appending`` (a writer's resume), is no JSON object (a
    CSV file, notes: records are not added to them). A UTF-8 byte order mark (BOM) is no
    reason: readers skip it. Readers and writers call it before anything else, so
    such a file is neither read as records nor cut at a "torn" last line. A later line that
    is not text is one bad line (:func:`read_records` skips it with a warning, as it does
    an interrupted write), never a reason to lose the records around it. ``fh``: ``path``
    already open (binary)."""
    try:
        if fh is not None:
            fh.seek(0)
            head = fh.read(HEAD_BYTES)
        else:
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
    except (FileNotFoundError, IsADirectoryError):
        return  # nothing there: nothing to refuse (opening it says what is wrong)
    except OSError as exc:
        raise OutputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    head = head.removeprefix(codecs.BOM_UTF8)  # (as Windows tools write): read as text
    if head.startswith(b"PAR1"):
        raise OutputError(f"{path}: a Parquet file, not JSON lines (name it .parquet)")
    start = len(head) - len(head.lstrip())  # blank lines skipped
    first = head[start:].split(b"\n", 1)[0]
    try:  # (final=False: a character cut at HEAD_BYTES is no error)
        codecs.getincrementaldecoder("utf-8")().decode(first, final=False)
        text = b"\0" not in first
    except UnicodeDecodeError:
        text = False
    n = head.count(b"\n", 0, start) + 1
    if not text:
        raise OutputError(f"{path}: not a JSON-lines records file (line {n} is not UTF-8 text)")
    if first[:1] == b"<":  # no JSON value starts so: a report page (given for its records)
        low = head[start : start + 1024].lower()
        html = low.startswith(b"<!doctype html") or b"<html" in low
        what = "an HTML page" if html else "an XML document"
        raise OutputError(f"{path}: {what}, not a JSON-lines records file")
    if appending and first and not first.startswith(b"{"):  # (a torn record starts so)
        raise OutputError(f"{path}: not a JSON-lines records file (line {n} is not a record)")


def check_replaceable(path: Path, fmt: str) -> None:
    """Refuse (:class:`OutputError`, one line) to replace a JSONL ``path`` that holds no
    records (a CSV, notes, a video given as ``-o`` by a slip); a missing or empty file, or
    one of records, may be replaced."""
    if fmt == "jsonl":
        try:
            check_jsonl(path, appending=True)
        except OutputError as exc:
            raise OutputError(f"{exc}; not replaced") from None


def read_records(
    path: str | Path, *, warn: bool = True, fh: BinaryIO | None = None
) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file; a torn or invalid line, or one that is not UTF-8 text,
    is skipped with a warning naming it (``warn=False``: silently, on a second pass over a
    file already read). A file that is not JSON lines at all is refused (see
    :func:`check_jsonl`). ``fh``: ``path`` already open (binary), read from its start."""
    p = Path(path)
    if fh is None and not p.exists():
        return
    check_jsonl(p, fh=fh)
    for lineno, rec in json_lines(p, encoding="utf-8-sig", fh=fh):
        if isinstance(rec, json.JSONDecodeError):
            if warn:
                why = rec.msg if isinstance(rec, NotTextError) else "interrupted write?"
                log.warning("%s:%d: skipping an unreadable line (%s)", p, lineno, why)
        elif isinstance(rec, dict):
            yield rec


class JsonlWriter(Closing):
    """Appends records to a JSONL file; knows which keys are already done.

    ``overwrite`` truncates the file first. Otherwise records whose ``status`` is ``ok``
    count as done (failed clips are retried on a re-run; with ``retry_failed=False`` every
    record counts as done), and a torn last line left by a killed process is cut off before
    anything new is appended (``keep_empty=False``: a file it made is removed at :meth:`close`
    when it stayed empty). ``done_keys`` given (e.g. read from several part files by
    :func:`~framepipe.output.store.open_writer`) replaces reading them from the file.
    ``ledger``: where :meth:`plan` keeps the inputs' plans (see :mod:`.ledger`); the
    ``done_inputs`` a re-run skips whole are filled in by ``open_writer``.

    Each record is one ``write`` of a whole line, flushed (fsynced at least every
    :data:`~framepipe.utils.SYNC_EVERY_S`, and at the end). :meth:`close`
    compacts the file (``compact``): it is rewritten beside itself and moved into place
    (``os.replace``) with one record per clip (see :mod:`~framepipe.output.compact`), only
    when something is superseded, and only when no other writer has the file open (writers
    hold a shared ``flock`` on it; the last one to close compacts). A run killed before
    that keeps every record it appended; the next run compacts.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        fsync: bool = True,
        retry_failed: bool = True,
        compact: bool = True,
        done_keys: Iterable[str] | None = None,
        ledger: Ledger | None = None,
        keep_empty: bool = True,
    ) -> None:
        self.path = Path(path)
        self.ledger = ledger
        self.keep_empty = keep_empty
        self.done_inputs: dict[str, int] = {}
        """Plan keys of inputs whose clips are all done, with their clip counts."""
        self.fsync = fsync
        self._sync_at = 0.0
        self.retry_failed = retry_failed
        self.compact = compact
        self.written = 0
        """Records written by this writer."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.path)  # a compaction's, killed
            if overwrite and self.path.exists():
                self.path.unlink()
            check_jsonl(self.path, appending=True)  # before its "torn" tail is cut
            self._new = not self.path.exists()
            self._fh = self._open()
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        # compacting at close reads the file again: skipped when nothing can be superseded
        # (the file held one record per clip, no key written here was in it, nobody else
        # appended); known only when the keys were read here
        self._others: set[str] | None = None  # with done_keys: every key in the file
        self._unplanned: np.ndarray | None = None  # inputs with records and no plan
        self._dirty = True
        self._size = os.fstat(self._fh.fileno()).st_size
        if done_keys is not None:
            self.done_keys: set[str] = set(done_keys)
        else:
            current = current_clips([ledger_of(self.path)], digested=True)
            metas = read_jsonl_meta(self.path)
            self.done_keys, self._others, every, self._unplanned = kept_keys(
                metas, current, retry_failed=retry_failed
            )
            self._dirty = not every

    def _open(self) -> Any:
        while True:
            fh = _open_locked(self.path)
            if try_exclusive(fh):  # no other writer: a torn tail is a killed one's
                self._repair_tail()
                _lock(fh, shared=True)
                return fh
            # a failed upgrade may drop the shared lock (flock(2)): take it again, and
            # make sure no compaction replaced the file meanwhile
            _lock(fh, shared=True)
            if _same_file(fh, self.path):
                return fh
            fh.close()

    def _repair_tail(self) -> None:
        """End the file with a newline: a final line without one is cut (a write interrupted
        by a kill), unless it is a whole record (a file written by another tool): that one
        gets its newline."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            # find the last newline
            block = 1 << 16
            pos = cut = size
            while pos > 0 and cut == size:
                start = max(0, pos - block)
                fh.seek(start)
                nl = fh.read(pos - start).rfind(b"\n")
                cut = start + nl + 1 if nl >= 0 else size
                pos = start
            cut = 0 if cut == size else cut
            fh.seek(cut)
            if _is_record(fh.read()):
                fh.write(b"\n")
                return
            fh.truncate(cut)
            log.warning("%s: dropped a torn last record (interrupted run)", self.path)

    def is_done(self, key: str) -> bool:
        return key in self.done_keys

    @property
    def done(self) -> dict[str, int]:
        """What the run skips: each done clip's key (one clip), and the plan key of each
        input whose clips are all done (its clips; see :func:`~framepipe.records.done_count`)."""
        done = dict.fromkeys(self.done_keys, 1)  # (one dict built: a million keys are many)
        done.update(self.done_inputs)
        return done

    def plan(self, plan: InputPlan) -> None:
        """Keep an input's plan in the ledger."""
        if self.ledger is None:
            return
        if self.ledger.add(plan):
            self._dirty = True  # the records of the input's earlier version go at close
        elif plan.of and self._unplanned is not None and holds(self._unplanned, plan.of):
            self._dirty = True  # its first plan: records of a version stopped half-way go

    def write(self, record: ClipResult | dict[str, Any]) -> None:
        rec = record.to_json() if isinstance(record, ClipResult) else record
        line = record_line(rec).encode("utf-8")
        try:
            append_whole(self._fh, line)
            if self.fsync:
                self._sync_at = sync_due(self._fh, self._sync_at)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        self.written += 1
        self._size += len(line)
        if self._others is not None:  # the file holds another record of it (or its input)?
            m = record_meta(rec)
            for k in (m.key, m.input_key):
                self._dirty |= k is not None and (k in self.done_keys or k in self._others)
            if m.whole_input_failure and self.ledger is not None:  # of an input read before:
                self._dirty |= m.key in self.ledger.newest  # its records may stand
        if rec.get("key") and (rec.get("status") == "ok" or not self.retry_failed):
            self.done_keys.add(str(rec["key"]))
        elif self._others is not None and rec.get("key") is not None:
            self._others.add(str(rec["key"]))

    def unused(self) -> bool:
        """Whether the file was made by this writer and is still empty, with no plan in its
        ledger: ``keep_empty=False`` (a folder's part file) removes it at :meth:`close`, so
        a run with nothing to write leaves no empty part."""
        ledger = self.ledger is not None and self.ledger.path.exists()
        return self._new and not ledger and os.fstat(self._fh.fileno()).st_size == 0

    def close(self) -> None:
        """Compact (see the class) and close; safe to call twice."""
        if self._fh.closed:
            return
        try:
            if self.ledger is not None:
                self.ledger.close()
            if self.fsync and self.written:
                sync_due(self._fh, 0.0, now=True)
            alone = (self.compact or not self.keep_empty) and try_exclusive(self._fh)
            if alone and not self.keep_empty and self.unused():
                self.path.unlink()  # (locked: no other writer has it open)
            elif self.compact and alone:
                appended = os.fstat(self._fh.fileno()).st_size != self._size  # by others
                if self._dirty or appended:
                    compact_jsonl(self.path, self.ledger.scope if self.ledger else None)
        except OSError as exc:  # (a full disk): every record stays, the next run compacts
            raise OutputError(
                f"{self.path}: cannot write ({exc.strerror or exc}); the records written "
                "are kept, and the next run tidies the file"
            ) from exc
        finally:
            self._fh.close()


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8-sig")), dict)
    except ValueError:  # (UnicodeDecodeError too)
        return False


def read_jsonl_meta(path: str | Path, fh: BinaryIO | None = None) -> Iterator[Meta]:
    """The :class:`~framepipe.output.compact.Meta` of each record of a JSONL file (``fh``:
    ``path`` already open)."""
    for rec in read_records(path, fh=fh):
        yield record_meta(rec)


def compact_jsonl(path: str | Path, ledgers: Iterable[Path] | None = None) -> int:
    """Rewrite a JSONL records file with one record per clip (atomically: a copy beside it
    moved into place; untouched when nothing is superseded). ``ledgers``: those that say
    each input's latest version (by default its own; a part file's folder holds more).
    Returns how many records were dropped. The caller makes sure no other process appends
    meanwhile."""
    p = Path(path)
    current = current_clips(ledgers or [ledger_of(p)], digested=True)
    keep = keep_mask(read_jsonl_meta(p), current)
    dropped = keep.count(False)
    if not dropped:
        return 0
    kept = (rec for rec, k in zip(read_records(p, warn=False), keep) if k)
    with atomic_output(p) as tmp:
        write_jsonl(kept, tmp)
    log.info("%s: %d superseded record(s) dropped", p, dropped)
    return dropped


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write ``records`` to the JSONL file ``path`` (names that are not UTF-8 too: see
    :func:`record_line`); returns how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(record_line(rec))
            n += 1
    return n


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; when the body ends without error the file there is
    fsynced and moved onto ``path`` (``os.replace``), else removed. Those left by a killed
    process go first (:func:`~framepipe.utils.remove_stale_temps`)."""
    remove_stale_temps(path)
    tmp = temp_beside(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if path.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _lock(fh: Any, *, shared: bool) -> None:
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)


def try_exclusive(fh: Any) -> bool:
    """Take the exclusive lock of ``fh``'s file unless another writer holds it (then the
    caller holds no lock: see flock(2) on converting locks)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open_locked(path: Path) -> Any:
    """``path`` opened for appending with a shared lock, on the file that is at ``path`` once
    locked (a compaction by another writer may have moved a new one there meanwhile)."""
    while True:
        fh = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by the writer
        try:
            _lock(fh, shared=True)
            if _same_file(fh, path):
                return fh
        except BaseException:
            fh.close()
            raise
        fh.close()


def _same_file(fh: Any, path: Path) -> bool:
    try:
        return os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def record_line(rec: dict[str, Any]) -> str:
    """One record as one JSON line (with its newline), valid UTF-8 whatever it holds.

    A file name that is not valid UTF-8 reaches a record as Python keeps it (lone surrogate
    escapes, :func:`os.fsdecode`), which UTF-8 cannot encode: such a record is written with
    every non-ASCII character as a JSON ``\\uXXXX`` escape (``"\\udcff"``), so the line is
    valid JSON and UTF-8, and ``os.fsencode(json.loads(line)["source"])`` gives back the
    name's bytes (issue 11.5; tests/test_discover.py). Other records keep their characters.
    """
    line = json.dumps(rec, ensure_ascii=False, default=json_default) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(rec, ensure_ascii=True, default=json_default) + "\n"
    return line


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays and paths."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
