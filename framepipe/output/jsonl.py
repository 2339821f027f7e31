"""The records file: one JSON line per clip, appended atomically, resumable.

Each record is written with a single ``write`` of one complete line and flushed to disk, so
an interrupted run leaves every finished record intact; a torn last line (a process killed
mid-write) is detected and dropped on the next open. A re-run reads the keys of the records
already there and skips those clips.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import OutputError
from framepipe.types import ClipResult

log = logging.getLogger(__name__)


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file; a torn or invalid line is skipped with a warning."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping an unreadable line (interrupted write?)", p, lineno)
                continue
            if isinstance(rec, dict):
                yield rec


class JsonlWriter:
    """Appends records to a JSONL file; knows which keys are already done.

    ``overwrite`` truncates the file first. Otherwise records whose ``status`` is ``ok``
    count as done (failed clips are retried on a re-run), and a torn last line left by a
    killed process is cut off before anything new is appended.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if overwrite and self.path.exists():
                self.path.unlink()
            self._repair_tail()
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        self.done_keys: set[str] = set()
        for rec in read_records(self.path):
            if rec.get("status") == "ok" and rec.get("key"):
                self.done_keys.add(str(rec["key"]))

    def _repair_tail(self) -> None:
        """Cut a final line that has no newline (a write interrupted by a kill)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            # find the last newline and truncate after it
            block = 1 << 16
            pos = size
            while pos > 0:
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    fh.truncate(start + nl + 1)
                    log.warning("%s: dropped a torn last record (interrupted run)", self.path)
                    return
                pos = start
            fh.truncate(0)

    def is_done(self, key: str) -> bool:
        return key in self.done_keys

    def write(self, record: ClipResult | dict[str, Any]) -> None:
        rec = record.to_json() if isinstance(record, ClipResult) else record
        line = record_line(rec)
        try:
            self._fh.write(line)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        if rec.get("status") == "ok" and rec.get("key"):
            self.done_keys.add(str(rec["key"]))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_line(rec: dict[str, Any]) -> str:
    """One record as one JSON line (with its newline), valid UTF-8 whatever it holds.

    A file name that is not valid UTF-8 reaches a record as Python keeps it (lone surrogate
    escapes, :func:`os.fsdecode`), which UTF-8 cannot encode: such a record is written with
    every non-ASCII character as a JSON ``\\uXXXX`` escape (``"\\udcff"``), so the line is
    valid JSON and UTF-8, and ``os.fsencode(json.loads(line)["source"])`` gives back the
    name's bytes. Every other record keeps its characters as they are.
    """
    line = json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(rec, ensure_ascii=True, default=_json_default) + "\n"
    return line


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
