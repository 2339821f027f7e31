"""Sources read inputs: ``video`` files, ``multiview`` scene folders, ``render``ed 3D models."""

from framepipe.sources.base import (
    Source,
    get_source_class,
    open_source,
    register_source,
    source_kinds,
)

__all__ = ["Source", "get_source_class", "open_source", "register_source", "source_kinds"]
