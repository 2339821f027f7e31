"""The ``multiview`` kind: a folder of images is one scene (:mod:`.source`), its images read
one by one (:mod:`.images`), camera poses from ``transforms.json`` or COLMAP (:mod:`.poses`,
:mod:`.colmap`)."""

from framepipe.sources.multiview.source import MultiviewSource

__all__ = ["MultiviewSource"]
