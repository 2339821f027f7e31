"""Sources read inputs: ``video`` files, ``multiview`` scene folders, ``render``ed 3D models."""

from framepipe.sources.base import (
    Source,
    get_source_class,
    guess_kind,
    open_source,
    register_source,
    source_kinds,
)

__all__ = [
    "Source",
    "get_source_class",
    "guess_kind",
    "open_source",
    "register_source",
    "source_kinds",
]
