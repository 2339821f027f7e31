"""Writers: one JSON line per clip (appended atomically, resumable), frame images, contact
sheets.

Each record is written with a single ``write`` of one complete line and flushed to disk, so
an interrupted run leaves every finished record intact; a torn last line (a process killed
mid-write) is detected and dropped on the next open. A re-run reads the keys of the records
already there and skips those clips.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import OutputError
from framepipe.types import ClipResult, FrameBatch

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
        line = json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n"
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


def write_frames(
    batch: FrameBatch,
    out_dir: Path,
    rel_to: Path,
    *,
    prefix: str = "frame",
    fmt: str = "jpg",
    quality: int = 92,
) -> list[str]:
    """Save each frame as an image in ``out_dir``; returns paths relative to ``rel_to``, in
    the order of ``batch.indices``. A repeated index gets its own file name (``_r1``)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    seen: dict[int, int] = {}
    for k, (idx, frame) in enumerate(zip(batch.indices, batch.images())):
        rep = seen.get(idx, 0)
        seen[idx] = rep + 1
        suffix = f"_r{rep}" if rep else ""
        name = f"{prefix}_{k:03d}_i{idx:06d}{suffix}.{fmt}"
        p = out_dir / name
        img = Image.fromarray(frame)
        if fmt in ("jpg", "jpeg"):
            img.save(p, quality=quality)
        else:
            img.save(p)
        paths.append(p.relative_to(rel_to).as_posix())
    return paths


def contact_sheet(
    batch: FrameBatch,
    labels: Sequence[str] | None = None,
    *,
    tile_width: int = 320,
    columns: int | None = None,
) -> Any:
    """One image with the frames in a grid, each labelled (index and time, or view name).

    Returns a PIL image. Tiles keep each frame's aspect ratio inside a cell.
    """
    from PIL import Image, ImageDraw

    images = batch.images()
    n = len(images)
    if labels is None:
        labels = _default_labels(batch)
    cols = columns or max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    aspect = max(f.shape[0] / max(1, f.shape[1]) for f in images)
    tile_h = max(1, round(tile_width * aspect))
    label_h = 18
    sheet = Image.new("RGB", (cols * tile_width, rows * (tile_h + label_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for k, (frame, label) in enumerate(zip(images, labels)):
        r, c = divmod(k, cols)
        img = Image.fromarray(frame)
        scale = min(tile_width / img.width, tile_h / img.height)
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        x = c * tile_width + (tile_width - size[0]) // 2
        y = r * (tile_h + label_h)
        sheet.paste(img, (x, y))
        draw.text((c * tile_width + 4, y + tile_h + 3), label, fill=(235, 235, 235))
    return sheet


def _default_labels(batch: FrameBatch) -> list[str]:
    labels = []
    for k, idx in enumerate(batch.indices):
        if batch.views is not None:
            labels.append(f"#{idx} {batch.views[k].name}")
        elif batch.timestamps_s is not None and batch.timestamps_s[k] is not None:
            t = float(batch.timestamps_s[k])  # type: ignore[arg-type]
            labels.append(f"#{idx}  {_fmt_time(t)}")
        else:
            labels.append(f"#{idx}")
    return labels


def _fmt_time(t: float) -> str:
    m, s = divmod(max(0.0, t), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:06.3f}" if h else f"{m:02d}:{s:06.3f}"
