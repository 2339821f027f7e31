"""Find the inputs among the paths a user gives: files and folders, recursively.

A file is claimed by a source kind by its extension, or, for unknown extensions, by its
first bytes (:func:`framepipe.sources.base.guess_kind`: the sources know their kinds,
discovery only walks the paths). A folder is one input when a kind claims it (a multi-view
scene); otherwise it is walked. Files that no kind claims are skipped with a note, not an
error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from framepipe.sources.base import guess_kind, source_kinds
from framepipe.utils import natural_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Input:
    """A path and the kind that will read it."""

    path: Path
    kind: str
    error: str | None = None
    """Set when the path cannot be an input at all (e.g. a folder with no media): the
    pipeline writes a ``failed`` record with this message instead of opening it."""


@dataclass(frozen=True)
class Skipped:
    """A path that was not taken, and why (reported as a note)."""

    path: Path
    reason: str


def discover(
    paths: Iterable[str | Path], *, kind: str | None = None
) -> tuple[list[Input], list[Skipped]]:
    """Expand ``paths`` into inputs, in a stable (natural, sorted) order.

    A path named explicitly is always returned as an input when it exists and is a file,
    even when no kind claims it: the source then fails on it with a clear error and a
    ``failed`` record (the user asked for it). Inside folders, unclaimed files are skipped.
    ``kind`` forces the kind of every explicit path (and of claimed entries in folders).
    """
    inputs: list[Input] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()

    def add(p: Path, k: str, error: str | None = None) -> None:
        key = p.resolve()
        if key in seen:
            return
        seen.add(key)
        inputs.append(Input(p, k, error))

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            # Named explicitly: the user expects a record for it.
            add(p, kind or "video")
            continue
        if p.is_file():
            k = kind or guess_kind(p) or "video"
            add(p, k)
            continue
        if kind is not None and kind != "video" and _kind_claims_dir(kind, p):
            add(p, kind)
            continue
        before = len(inputs)
        _walk(p, kind, add, skipped)
        if len(inputs) == before:
            add(p, kind or "video", error=f"{p}: folder holds no video, image scene or 3D model")
    return inputs, skipped


def _kind_claims_dir(kind: str, p: Path) -> bool:
    cls = source_kinds().get(kind)
    return bool(cls and cls.claims_dir(p))


def _walk(
    root: Path,
    kind: str | None,
    add: Callable[[Path, str], None],
    skipped: list[Skipped],
) -> None:
    claimed = guess_kind(root) if kind is None else (kind if _kind_claims_dir(kind, root) else None)
    if claimed is not None:
        add(root, claimed)
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: natural_key(e.name))
    except OSError as exc:
        skipped.append(Skipped(root, f"cannot list folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        p = Path(entry.path)
        if entry.is_dir():
            _walk(p, kind, add, skipped)
            continue
        k = guess_kind(p)
        if k is None or (kind is not None and k != kind):
            skipped.append(Skipped(p, "not a video, image scene or 3D model"))
            continue
        add(p, k)
