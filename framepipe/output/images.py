"""Frame images and contact sheets of a clip, written next to (or under) its record, in a
local folder or an object store (:mod:`~framepipe.output.remote`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.output.remote import join, relative, save_image
from framepipe.types import FrameBatch

MAX_TILE_ASPECT = 2.0
"""Tallest cell of a contact sheet, as height / width: a taller frame (a scene view two
pixels wide and thousands high) is shrunk into the cell instead of making every cell, and
the sheet, that tall."""


def write_frames(
    batch: FrameBatch,
    out_dir: str | os.PathLike[str],
    rel_to: str | os.PathLike[str],
    *,
    prefix: str = "frame",
    fmt: str = "jpg",
    quality: int = 92,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Save each frame as an image in ``out_dir`` (a folder or a URI); returns paths relative
    to ``rel_to``, in the order of ``batch.indices``. A repeated index gets its own file name
    (``_r1``)."""
    from PIL import Image

    options: dict[str, Any] = {"format": Image.registered_extensions()[f".{fmt}"]}
    if fmt in ("jpg", "jpeg"):
        options["quality"] = quality
    paths: list[str] = []
    seen: dict[int, int] = {}
    for k, (idx, frame) in enumerate(zip(batch.indices, batch.images())):
        rep = seen.get(idx, 0)
        seen[idx] = rep + 1
        suffix = f"_r{rep}" if rep else ""
        target = join(out_dir, f"{prefix}_{k:03d}_i{idx:06d}{suffix}.{fmt}")
        save_image(Image.fromarray(frame), target, storage_options, **options)
        paths.append(Path(relative(target, rel_to)).as_posix())
    return paths


def contact_sheet(
    batch: FrameBatch,
    labels: Sequence[str] | None = None,
    *,
    tile_width: int = 320,
    columns: int | None = None,
) -> Any:
    """One image with the frames in a grid, each labelled (index and time, or view name).

    Returns a PIL image. Tiles keep each frame's aspect ratio inside a cell; cells are as
    tall as the tallest frame needs, up to :data:`MAX_TILE_ASPECT` times their width.
    """
    from PIL import Image, ImageDraw

    images = batch.images()
    n = len(images)
    if labels is None:
        labels = _default_labels(batch)
    cols = columns or max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    aspect = min(MAX_TILE_ASPECT, max(f.shape[0] / max(1, f.shape[1]) for f in images))
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
            labels.append(f"#{idx}  {fmt_time(t)}")
        else:
            labels.append(f"#{idx}")
    return labels


def fmt_time(t: float) -> str:
    """``t`` seconds as ``mm:ss.mmm`` (``h:mm:ss.mmm`` from an hour on)."""
    m, s = divmod(max(0.0, t), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:06.3f}" if h else f"{m:02d}:{s:06.3f}"
