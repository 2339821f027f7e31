"""Writers: the records file (:mod:`~framepipe.output.jsonl`: one JSON line per clip,
appended atomically, resumable) and a clip's frame images and contact sheet
(:mod:`~framepipe.output.images`). The HTML report is :mod:`framepipe.report`."""

from framepipe.output.images import contact_sheet, write_frames
from framepipe.output.jsonl import JsonlWriter, read_records

__all__ = ["JsonlWriter", "contact_sheet", "read_records", "write_frames"]
