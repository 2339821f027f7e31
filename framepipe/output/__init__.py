"""Writers: the records (:mod:`~framepipe.output.store`: one JSONL or Parquet file or a
folder of part files, one record per clip, resumable; ``merge`` in
:mod:`~framepipe.output.merge`; each records file's
input ledger in :mod:`~framepipe.output.ledger`; the JSONL file itself in
:mod:`~framepipe.output.jsonl`, Parquet in :mod:`~framepipe.output.parquet`, the
one-record-per-clip rule in :mod:`~framepipe.output.compact`) and a clip's frame images and
contact sheet (:mod:`~framepipe.output.images`); whether an output can be written
(:mod:`~framepipe.output.checks`). The HTML report is :mod:`framepipe.report`."""

from framepipe.output.checks import check_output, check_writable
from framepipe.output.images import contact_sheet, write_frames
from framepipe.output.jsonl import JsonlWriter, compact_jsonl, read_records
from framepipe.output.ledger import ledger_of
from framepipe.output.merge import MergeResult, merge
from framepipe.output.store import (
    FORMATS,
    ParquetWriter,
    RecordWriter,
    format_of,
    is_folder_output,
    open_writer,
    part_path,
    read_done_keys,
    read_output,
    record_files,
    writer_target,
)

__all__ = [
    "FORMATS",
    "JsonlWriter",
    "MergeResult",
    "ParquetWriter",
    "RecordWriter",
    "check_output",
    "check_writable",
    "compact_jsonl",
    "contact_sheet",
    "format_of",
    "is_folder_output",
    "ledger_of",
    "merge",
    "open_writer",
    "part_path",
    "read_done_keys",
    "read_output",
    "read_records",
    "record_files",
    "write_frames",
    "writer_target",
]
