"""Manifests: files that list the inputs, streamed row by row (millions of rows).

Formats, by extension (``-``, the standard input: by content, see :func:`stdin_copy`):

- text (``.txt``, ``.lst``, any other): one path or URI a line; blank lines and lines
  starting with ``#`` are skipped;
- CSV (``.csv``; ``.tsv`` tab-separated) with a header, JSON Lines (``.jsonl``, ``.ndjson``)
  and Parquet (``.parquet``, ``.pq``): a ``path`` column, and optional ``id``,
  ``questions`` (a JSON list of strings, or one question), ``start_s`` and ``end_s`` (the
  clip range in seconds). Other columns are ignored. Column names are matched without
  regard to case and surrounding spaces (Excel's `` Path ``); a ``.csv`` whose header
  splits into a ``path`` column at ``;`` or tabs, not commas, is read so (European Excel;
  its decimal commas in ``start_s``/``end_s`` are read as points).

Text, CSV and TSV manifests are UTF-8, or UTF-16 when they start with its byte-order mark
(Excel's "Unicode Text"); JSON Lines are UTF-8. A listed name that is not UTF-8 is the file
of that name, or else the name read as Windows-1252 (Excel's CSV on Windows). A relative
path is taken relative to the manifest's folder (stdin's: the current folder). Rows are
read lazily (the csv module, one JSON line at a time, Parquet record batches through
pyarrow), so memory does not grow with the manifest. A manifest without a ``path`` column
is a one-line ConfigError raised by :func:`check_manifest` before any heavy work; a bad row
(empty path, a bad clip range or questions) is an input whose ``error`` names the manifest
line (``list.csv:7: ...``), so it becomes one failed record and the run goes on.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from framepipe.discovery import Input
from framepipe.errors import ConfigError
from framepipe.utils import json_lines

COLUMNS = ("path", "id", "questions", "start_s", "end_s")
"""The columns a manifest row may have (``path`` is required, except in text files)."""

PARQUET_BATCH_ROWS = 4096

DECIMAL_COMMA = re.compile(r"\d+,\d+")

Row = tuple[str, dict[str, Any]]
"""``(where, fields)``: the row's location (``list.csv:7``) and its known columns."""


FORMATS = {
    ".txt": "txt",
    ".lst": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""The format of a manifest, by its extension (another extension is read as ``txt``)."""

MANIFEST_SUFFIXES = tuple(FORMATS)
"""The extensions of manifests (a row naming such a file no source reads is no input)."""


STDIN = "-"
"""The manifest name that stands for the standard input."""

_stdin: dict[str, Any] = {}  # the copy of stdin ("path") and its format ("format")


def manifest_format(path: Path) -> str:
    """``txt``, ``csv``, ``tsv``, ``jsonl`` or ``parquet``, from the extension (the copy of
    stdin: from its content, see :func:`stdin_copy`)."""
    if _stdin and path == _stdin["path"]:
        return str(_stdin["format"])
    return FORMATS.get(path.suffix.lower(), "txt")


def _name(p: Path) -> str:
    """The manifest as messages name it (``<stdin>`` for the copy of the standard input)."""
    return "<stdin>" if _stdin and p == _stdin["path"] else str(p)


def stdin_copy() -> Path:
    """The standard input, read once (to its end) into a temporary file, removed when the
    process exits; its format is found from its content: Parquet is refused (give its
    file), a first line that is a JSON object makes JSON Lines, a first line that is a
    header with a ``path`` column (split at commas, semicolons or tabs) makes CSV, anything
    else is a text list. A ConfigError when stdin is a terminal (nothing piped in)."""
    if _stdin:
        return Path(_stdin["path"])
    stream = sys.stdin
    if stream is None or stream.isatty():
        raise ConfigError(
            "--inputs-from -: stdin is a terminal; pipe the list in (find ... | framepipe ...)"
        )
    fd, name = tempfile.mkstemp(prefix="framepipe-stdin-", suffix=".manifest")
    atexit.register(lambda: Path(name).unlink(missing_ok=True))
    with os.fdopen(fd, "wb") as fh:
        shutil.copyfileobj(stream.buffer, fh)
    path = Path(name)
    with open(path, "rb") as fh:
        if fh.read(4) == b"PAR1":
            path.unlink()
            raise ConfigError(
                "<stdin>: a Parquet manifest cannot be read from stdin; give its file"
            )
    with open(path, encoding=text_encoding(path), errors="surrogateescape") as fh:
        first = next((line.strip() for line in fh if line.strip()), "")
    _stdin.update(path=path, format="txt")
    if first.startswith("{"):
        _stdin["format"] = "jsonl"
    elif "path" in _csv_header(path, "csv")[1]:
        _stdin["format"] = "csv"
    return path


def manifest_file(path: str | Path) -> Path:
    """The file a manifest is read from: ``path``, or for ``-`` the copy of stdin."""
    return stdin_copy() if str(path) == STDIN else Path(path)


def text_encoding(path: Path) -> str:
    """How a text manifest is decoded: ``utf-16`` when it starts with a UTF-16 byte-order
    mark (Excel's "Unicode Text" and CSV UTF-16 exports), else UTF-8 (its mark skipped)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return "utf-16" if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"


def windows_spelling(path: str) -> str | None:
    """``path`` read as Windows-1252 text (Excel's CSV on Windows) where it is not UTF-8
    (its other bytes kept as surrogate escapes), else None."""
    if not any("\udc80" <= c <= "\udcff" for c in path):
        return None
    try:
        return path.encode("utf-8", "surrogateescape").decode("cp1252")
    except UnicodeError:
        return None


def column(name: Any) -> Any:
    """The known column ``name`` stands for (``" Path "`` is ``path``), else ``name``."""
    if isinstance(name, str) and name.strip().lower() in COLUMNS:
        return name.strip().lower()
    return name


def _known(p: Path, names: list[str]) -> list[str]:
    """``names`` with the known columns named as :data:`COLUMNS` does; a one-line
    ConfigError when two columns stand for one (``path`` and ``Path``)."""
    out = [column(c) for c in names]
    for c in COLUMNS:
        twins = [names[k] for k, o in enumerate(out) if o == c]
        if len(twins) > 1:
            shown = ", ".join(repr(t) for t in twins)
            raise ConfigError(f"{_name(p)}: the manifest has several {c!r} columns ({shown})")
    return out


def _csv_header(p: Path, fmt: str) -> tuple[str, list[str]]:
    """The delimiter of a CSV/TSV manifest and its header's columns (known ones named as
    :data:`COLUMNS`): a ``.csv`` whose header has no ``path`` column between commas but
    has one between semicolons or tabs is read with those."""
    with open(p, newline="", encoding=text_encoding(p), errors="surrogateescape") as fh:
        line = fh.readline()
    tries = ["\t"] if fmt == "tsv" else [",", ";", "\t"]
    headers = [(d, next(csv.reader([line], delimiter=d), [])) for d in tries]
    for d, names in headers:
        if "path" in [column(c) for c in names]:
            return d, _known(p, names)
    return headers[0][0], [c.strip() for c in headers[0][1]]


def _open_error(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"{_name(path)}: cannot read the manifest ({exc.strerror or exc})")


def check_manifest(path: str | Path) -> str:
    """The manifest's format; a one-line ConfigError when it cannot be read or has no
    ``path`` column (only the header, or the first row of JSON Lines, is read)."""
    p = manifest_file(path)
    fmt = manifest_format(p)
    if p.is_dir():
        raise ConfigError(f"{_name(p)}: the manifest is a folder, not a file")
    columns: list[str] | None = None
    try:
        if fmt in ("csv", "tsv"):
            columns = _csv_header(p, fmt)[1]
        elif fmt == "jsonl":
            if text_encoding(p) != "utf-8-sig":
                raise ConfigError(f"{_name(p)}: the manifest is UTF-16 text; JSON Lines are UTF-8")
            first = next(_jsonl_rows(p), None)
            if first is not None and first[1].get("__bad__") is None:
                columns = [column(c) for c in first[1]]
            elif first is None:
                columns = []
        elif fmt == "parquet":
            columns = _parquet_columns(p)
        else:
            with open(p, "rb"):
                pass
    except OSError as exc:
        raise _open_error(p, exc) from None
    if columns is not None and "path" not in columns:
        shown = ", ".join(columns[:8]) or "none"
        raise ConfigError(f"{_name(p)}: the manifest has no 'path' column (columns: {shown})")
    return fmt


def _parquet_columns(p: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{_name(p)}: Parquet manifests need pyarrow: pip install pyarrow"
        ) from None
    try:
        names = list(pq.ParquetFile(p).schema_arrow.names)
    except OSError:
        raise
    except Exception as exc:
        raise ConfigError(f"{_name(p)}: not a readable Parquet file ({exc})") from None
    return _known(p, names)


# Text and CSV lists are read as file names are (bytes that are not UTF-8 kept as surrogate
# escapes, :func:`os.fsdecode`), so a listed name that is not UTF-8 is that file's name.
def _txt_rows(p: Path) -> Iterator[Row]:
    name = _name(p)
    with open(p, encoding=text_encoding(p), errors="surrogateescape") as fh:
        for n, line in enumerate(fh, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield f"{name}:{n}", {"path": text}


def _csv_rows(p: Path, fmt: str) -> Iterator[Row]:
    name = _name(p)
    delimiter = _csv_header(p, fmt)[0]
    with open(p, newline="", encoding=text_encoding(p), errors="surrogateescape") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        reader.fieldnames = _known(p, list(reader.fieldnames or []))  # (reads the header)
        for row in reader:
            fields = {k: v for k, v in row.items() if k in COLUMNS and v not in (None, "")}
            if not any(v not in (None, "") for v in row.values()):
                continue  # a blank line
            if delimiter == ";":  # decimal commas: 0,5 is 0.5
                for k in ("start_s", "end_s"):
                    if k in fields and DECIMAL_COMMA.fullmatch(fields[k].strip()):
                        fields[k] = fields[k].strip().replace(",", ".")
            yield f"{name}:{reader.line_num}", fields


def _jsonl_rows(p: Path) -> Iterator[Row]:
    name = _name(p)
    for n, obj in json_lines(p, encoding="utf-8-sig"):
        if isinstance(obj, json.JSONDecodeError):
            yield f"{name}:{n}", {"__bad__": f"not a JSON object ({obj.msg})"}
        elif not isinstance(obj, dict):
            yield f"{name}:{n}", {"__bad__": "not a JSON object"}
        else:
            fields = {}
            for k, v in obj.items():
                if column(k) in COLUMNS and v is not None:
                    if column(k) in fields:
                        fields = {"__bad__": f"several keys stand for {column(k)!r}"}
                        break
                    fields[column(k)] = v
            yield f"{name}:{n}", fields


def _parquet_rows(p: Path) -> Iterator[Row]:
    name = _name(p)
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(p)
    columns = [c for c in pf.schema_arrow.names if column(c) in COLUMNS]
    n = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            n += 1
            yield f"{name}:row {n}", {column(k): v for k, v in row.items() if v is not None}


def manifest_rows(path: str | Path) -> Iterator[Row]:
    """The rows of a manifest, lazily, as ``(where, fields)``."""
    p = manifest_file(path)
    fmt = check_manifest(p)
    if fmt in ("csv", "tsv"):
        return _csv_rows(p, fmt)
    if fmt == "jsonl":
        return _jsonl_rows(p)
    if fmt == "parquet":
        return _parquet_rows(p)
    return _txt_rows(p)


class RowError(ValueError):
    """A manifest row that cannot be an input."""


def _seconds(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):  # JSON true is no number of seconds (float(True) is 1.0)
        raise RowError(f"{name} ({value!r}) is not a number of seconds")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{name} ({value!r}) is not a number of seconds") from None
    if not math.isfinite(x):  # negative is fine: a video's first frame may be before 0 s
        raise RowError(f"{name} ({value!r}) must be a finite number")
    return x


def _questions(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RowError(f"questions is not a JSON list ({exc.msg})") from None
        else:
            value = [text]
    if not isinstance(value, (list, tuple)) or not value:
        raise RowError("questions must be a non-empty list of strings, or one string")
    out = []
    for k, q in enumerate(value, 1):
        if not isinstance(q, str) or not q.strip():
            raise RowError(f"question {k} is empty or not a string")
        out.append(q.strip())
    return tuple(out)


def row_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The checked ``Input`` fields of one row (path as a string); RowError when bad."""
    bad = fields.get("__bad__")
    if bad:
        raise RowError(str(bad))
    raw = fields.get("path")
    if not isinstance(raw, str) or not raw.strip():
        raise RowError("empty path" if raw in (None, "") else f"path {raw!r} is not a string")
    if "\0" in raw:  # no file name holds one (a manifest in another encoding, often)
        raise RowError(f"path {raw.strip()!r} holds a NUL character")
    start_s = _seconds(fields.get("start_s"), "start_s")
    end_s = _seconds(fields.get("end_s"), "end_s")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise RowError(f"end_s ({end_s:g}) must be greater than start_s ({start_s:g})")
    ident = fields.get("id")
    if ident is not None and not isinstance(ident, (str, int, float)):
        raise RowError(f"id {ident!r} is not a string or a number")
    return {
        "path": raw.strip(),
        "id": None if ident is None or ident == "" else str(ident),
        "questions": _questions(fields.get("questions")),
        "start_s": start_s,
        "end_s": end_s,
    }


def bad_row(where: str, reason: str, kind: str | None, ident: Any = None) -> Input:
    """The input standing for a row that cannot be one: it fails with ``where: reason``,
    and keeps the row's ``id`` (``ident``) when it has one."""
    if not isinstance(ident, (str, int, float)) or ident == "":
        ident = None
    return Input(
        Path(where),
        kind or "video",
        error=f"{where}: {reason}",
        id=None if ident is None else str(ident),
    )
