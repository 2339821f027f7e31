"""Whether an output can be written: checked when a run is called, before any work (a run
refused here writes nothing)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from framepipe.errors import OutputError
from framepipe.inputs.remote import is_remote
from framepipe.output.remote import check_store
from framepipe.output.store import is_folder_output


def nearest_existing(path: Path) -> Path:
    """``path``, or the nearest of its parents that exists (what a new file's folders would
    be made in; a file there is what stands in their way)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path, what: str = "output") -> None:
    """OutputError unless ``path`` (a file, maybe not there yet) can be written."""
    if path.is_dir():
        raise OutputError(f"{path}: the {what} is a folder, not a file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: the {what} file is not writable")
        return
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot create the {what} ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot create the {what} ({parent} is not writable)")


def check_output(path: str | Path, storage_options: dict[str, Any] | None = None) -> None:
    """OutputError unless the output ``path`` (a records file, or a folder of part files:
    see :func:`framepipe.output.open_writer`; or one in an object store) can be written."""
    if is_remote(str(path)):
        check_store(str(path), storage_options)
        return
    if is_folder_output(path):
        check_writable(Path(path) / ".framepipe-check", "output folder")
    else:
        check_writable(Path(path))
