"""Records as Parquet (the ``parquet`` extra: pyarrow).

One fixed schema for every file, so that part files concatenate and load alike in pandas
(``pandas.read_parquet``), pyarrow and ``datasets.load_dataset("parquet", ...)``:

- text columns: ``source``, ``kind``, ``status``, ``error``, ``key``, ``input_key``,
  ``prompt``, ``contact_sheet``;
- lists of scalars as Parquet lists: ``indices`` (int64), ``timestamps_s`` (float64, null
  where unknown), ``frames``, ``questions``, ``answers`` (strings), ``truncated`` (bool, null
  where unknown; a file written before it had the column reads as records without it);
- every field whose value is an object of varying shape as a **JSON string**: ``clip``,
  ``sampler``, ``selection``, ``views``, ``model``, ``generation``, ``timings_s``, and
  ``extra``: the record's other top-level fields (``stage``, ``tokens``, ``note`` ...) as one
  JSON object. ``json.loads`` of a cell gives the value the JSONL record holds;
  :func:`from_row` rebuilds the JSONL record exactly.

A Parquet file cannot be appended to: a run writes its records to a JSONL journal beside it
(``.<name>.journal``, fsynced line by line) and folds them into the file at the end (see
:class:`~framepipe.output.jsonl.ParquetWriter`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from framepipe.errors import MissingDependencyError, OutputError
from framepipe.output.compact import Meta

if TYPE_CHECKING:
    import pyarrow as pa

TEXT = ("source", "kind", "status", "error", "key", "input_key", "prompt", "contact_sheet")
INT_LISTS = ("indices",)
FLOAT_LISTS = ("timestamps_s",)
TEXT_LISTS = ("frames", "questions", "answers")
BOOL_LISTS = ("truncated",)
JSON_FIELDS = (
    "clip",
    "sampler",
    "selection",
    "views",
    "model",
    "generation",
    "timings_s",
    "extra",
)
COLUMNS = (*TEXT, *INT_LISTS, *FLOAT_LISTS, *TEXT_LISTS, *BOOL_LISTS, *JSON_FIELDS)
ROWS_PER_GROUP = 2048


def _pa() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "parquet", "parquet output") from exc
    return pa


def schema() -> pa.Schema:
    """The schema every records file in Parquet has."""
    pa = _pa()
    fields = [pa.field(n, pa.string()) for n in TEXT]
    fields += [pa.field(n, pa.list_(pa.int64())) for n in INT_LISTS]
    fields += [pa.field(n, pa.list_(pa.float64())) for n in FLOAT_LISTS]
    fields += [pa.field(n, pa.list_(pa.string())) for n in TEXT_LISTS]
    fields += [pa.field(n, pa.list_(pa.bool_())) for n in BOOL_LISTS]
    fields += [pa.field(n, pa.string()) for n in JSON_FIELDS]
    return pa.schema(fields)


def _dumps(value: Any) -> str | None:
    from framepipe.output.jsonl import record_line

    return None if value is None else record_line(value).rstrip("\n")


def _text(value: Any) -> str:
    """``value`` as text a Parquet string holds (UTF-8 only): a file name that is not UTF-8
    (kept by Python as surrogate escapes, :func:`os.fsdecode`) is stored with those as
    ``\\udcXX`` text, as the console shows it; JSONL (and the JSON columns) keep it exactly."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def to_row(rec: dict[str, Any]) -> dict[str, Any]:
    """A record dict (as written to JSONL) as a row of :func:`schema`."""
    known = set(COLUMNS) - {"extra"}
    row: dict[str, Any] = {}
    for name in TEXT:
        v = rec.get(name)
        row[name] = None if v is None else _text(v)
    for name in (*INT_LISTS, *FLOAT_LISTS, *BOOL_LISTS):
        v = rec.get(name)
        row[name] = None if v is None else list(v)
    for name in TEXT_LISTS:
        v = rec.get(name)
        row[name] = None if v is None else [None if t is None else _text(t) for t in v]
    for name in JSON_FIELDS:
        if name != "extra":
            row[name] = _dumps(rec.get(name))
    extra = {k: v for k, v in rec.items() if k not in known}
    row["extra"] = _dumps(extra) if extra else None
    return row


def from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The record dict (as written to JSONL) of a row of :func:`schema`."""
    rec: dict[str, Any] = {}
    for name in COLUMNS:
        if name not in row:
            continue
        v = row[name]
        if name == "extra":
            if v is not None:
                rec.update(json.loads(v))
            continue
        if name == "input_key" and v is None:
            continue  # only clip records have one
        rec[name] = json.loads(v) if name in JSON_FIELDS and v is not None else v
    return rec


def _check(path: Path, fh: BinaryIO | None = None) -> Any:
    pa = _pa()
    import pyarrow.parquet as pq

    # opened here: pyarrow cannot open a name that is not UTF-8; the ParquetFile holds it
    src = fh if fh is not None else open(path, "rb")  # noqa: SIM115
    try:
        src.seek(0)
        return pq.ParquetFile(src)
    except (OSError, pa.ArrowException) as exc:
        if fh is None:
            src.close()
        raise OutputError(f"{path}: not a readable Parquet records file ({exc})") from exc


def read_parquet(path: str | Path, fh: BinaryIO | None = None) -> Iterator[dict[str, Any]]:
    """The records of a Parquet records file, in row order (``fh``: ``path`` already open)."""
    p = Path(path)
    if fh is None and not p.exists():
        return
    pf = _check(p, fh)
    for batch in pf.iter_batches(batch_size=ROWS_PER_GROUP):
        for row in batch.to_pylist():
            yield from_row(row)


def read_parquet_meta(path: str | Path, fh: BinaryIO | None = None) -> Iterator[Meta]:
    """The :class:`~framepipe.output.compact.Meta` of each row (only the columns it needs;
    ``fh``: ``path`` already open)."""
    p = Path(path)
    if fh is None and not p.exists():
        return
    pf = _check(p, fh)
    cols = [c for c in ("key", "status", "clip", "input_key") if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=65536, columns=cols):
        d = {c: batch.column(c).to_pylist() for c in cols if c != "clip"}
        if "clip" in cols:  # (whether there is one: its JSON text is not needed)
            d["clip"] = batch.column("clip").is_valid().to_pylist()
        n = batch.num_rows
        for i in range(n):
            key = d["key"][i] if "key" in d else None
            ok = (d["status"][i] if "status" in d else "ok") in ("ok", None)
            has_clip = "clip" in d and d["clip"][i]
            ikey = d["input_key"][i] if "input_key" in d and has_clip else None
            yield Meta(key, ok, not has_clip and not ok, ikey)


def write_parquet(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write ``records`` (dicts) to a new Parquet file at ``path`` in row groups; returns
    how many were written. Not atomic by itself (see ``framepipe.output.store``)."""
    pa = _pa()
    import pyarrow.parquet as pq

    sch = schema()
    n = 0
    # opened here: pyarrow cannot open a name that is not UTF-8
    with open(path, "wb") as fh, pq.ParquetWriter(fh, sch) as w:
        rows: list[dict[str, Any]] = []
        for rec in records:
            rows.append(to_row(rec))
            if len(rows) >= ROWS_PER_GROUP:
                w.write_table(pa.Table.from_pylist(rows, schema=sch))
                n += len(rows)
                rows = []
        if rows or n == 0:
            w.write_table(pa.Table.from_pylist(rows, schema=sch))
            n += len(rows)
    return n
