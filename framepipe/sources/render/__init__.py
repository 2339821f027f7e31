"""The ``render`` kind: a mesh or point cloud drawn from n cameras (:mod:`.source`): files
checked before Open3D reads them (:mod:`.check_ply`, :mod:`.check_formats`) and read into
arrays (:mod:`.geometry`), cameras placed (:mod:`.cameras`, :mod:`.scans`, :mod:`.upright`)
and views drawn on the CPU (:mod:`.raycast`) or with Filament in a child process
(:mod:`.filament`); option values in :mod:`.options`."""

from framepipe.sources.render.source import RenderSource

__all__ = ["RenderSource"]
