"""The render source: a mesh or point cloud drawn from n cameras, each view one frame.

Rendering is lazy. :meth:`RenderSource.info` reads the geometry and places the cameras
(metadata only); :meth:`RenderSource.read` renders exactly the views asked for. The default
renderer runs on the CPU with no display and no GPU (Open3D ray casting for meshes, numpy
splats for point clouds); ``renderer="filament"`` tries Open3D's ``OffscreenRenderer`` in a
separate process and falls back to ray casting when it fails.
:meth:`RenderSource.visible_surface` measures what every candidate view sees of the surface;
the n-view sampler chooses the views from that (the source chooses nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import framepipe.sources.render.cameras as cams
from framepipe.errors import ConfigError, DecodeError
from framepipe.sources.base import Source, frame_indices, register_source
from framepipe.sources.render.geometry import (
    CLOUD_EXTENSIONS,
    MESH_EXTENSIONS,
    Geometry,
    load_geometry,
    used_points,
)
from framepipe.sources.render.options import integer, number, parse_color, parse_size
from framepipe.sources.render.scans import CAP_DEG, around_reason, cap_directions, frame_and_sensor
from framepipe.sources.render.upright import choose_up
from framepipe.types import FrameBatch, SourceInfo, ViewInfo, VisibleSurface, as_matrix4

log = logging.getLogger(__name__)

_FIT_POINTS = 20000
"""Points used to fit the camera distance (an even stride through the geometry)."""


@register_source
class RenderSource(Source):
    """A mesh or point cloud rendered to ``num_views`` candidate views; view i is frame i.

    Options (``--source-opt key=value``):

    - ``cameras``: ``orbit`` (default; a ring at ``elevation_deg``, view 0 in front) or
      ``sphere`` (a Fibonacci spiral, evenly over the sphere, top to bottom).
    - ``placement``: ``auto`` (default: a one-sided capture -- an organized PCD, a PCD
      VIEWPOINT, normals facing one way, points the origin sees as one surface -- is viewed
      from a cone of views around its sensor's side; anything else with ``cameras``),
      ``around`` (always ``cameras``) or ``sensor``. Far outliers of a cloud are left out
      of the framing. ``info().extra["placement"]`` says what was chosen and why.
    - ``num_views``: candidate views (default 48, every 7.5 degrees on the orbit); samplers
      pick n of them (48 divides evenly into 4, 6, 8, 12, 16 and 24 views).
    - ``size``: image size, ``384`` (default, the model's input size), ``WxH`` or ``[W, H]``.
    - ``up``: ``auto`` (default: glTF is y-up; a mesh in a format without an up convention
      (OBJ, PLY, STL, OFF) stands on its most stable resting face when one is clearly the
      most stable; a one-sided capture keeps its sensor's image up (-y in camera
      coordinates); else the format's usual axis, y for OBJ/PLY, z for STL/OFF/PCD/XYZ/PTS)
      or ``x``, ``y``, ``z``, ``-x``, ``-y``, ``-z``.
    - ``elevation_deg``: the orbit's height above the horizon (default 20).
    - ``azimuth_deg``: where view 0 sits on the orbit (default 0: in front of the object).
    - ``fov_deg``: field of view across the shorter side (default 40).
    - ``fill``: share of the frame the object may fill in its widest view (default 0.9);
      one camera distance serves all views, so views differ only by rotation.
    - ``background``: ``[r, g, b]`` in 0..255, ``#rrggbb`` or a name (default white).
    - ``supersample``: render k x k samples per pixel for anti-aliasing (default 1; 2 costs
      about 4x).
    - ``point_size``: scale of point splats relative to the cloud's spacing (default 1).
    - ``renderer``: ``raycast`` (default, CPU) or ``filament`` (Open3D's OffscreenRenderer
      in a separate process, killed after ``filament_timeout_s`` (default 60) and tried
      once more; any failure falls back to ``raycast`` with a warning, for the rest of
      this source).
    - ``threads``: ray-casting threads (default 0: all cores).

    Poses in :class:`~framepipe.types.ViewInfo` are camera-to-world in the file's own
    coordinates (OpenGL convention: the camera looks down -z); the object's centre and
    radius are in ``info().extra``.
    """

    kind: ClassVar[str] = "render"
    extensions: ClassVar[frozenset[str]] = MESH_EXTENSIONS | CLOUD_EXTENSIONS

    def __init__(
        self,
        path: str | Path,
        *,
        cameras: str = "orbit",
        placement: str = "auto",
        num_views: int = 48,
        size: Any = 384,
        up: str = "auto",
        elevation_deg: float = 20.0,
        azimuth_deg: float = 0.0,
        fov_deg: float = 40.0,
        fill: float = 0.9,
        background: Any = (255, 255, 255),
        supersample: int = 1,
        point_size: float = 1.0,
        renderer: str = "raycast",
        filament_timeout_s: float = 60.0,
        threads: int = 0,
        **options: Any,
    ) -> None:
        super().__init__(path, **options)
        if options:
            # options are shared by every kind in a run (e.g. backend=pyav for videos)
            log.warning(
                "%s: render source ignores option(s) %s (known: %s)",
                path,
                ", ".join(sorted(options)),
                ", ".join(sorted(self.option_names() or ())),
            )
        if cameras not in ("orbit", "sphere"):
            raise ConfigError(f"cameras ({cameras!r}) must be orbit or sphere")
        if placement not in ("auto", "around", "sensor"):
            raise ConfigError(f"placement ({placement!r}) must be auto, around or sensor")
        self.placement = placement
        if renderer not in ("raycast", "filament"):
            raise ConfigError(f"renderer ({renderer!r}) must be raycast or filament")
        self.num_views = integer("num_views", num_views, 1, 10000)
        self.supersample = integer("supersample", supersample, 1, 8)
        self.threads = integer("threads", threads, 0, 4096)
        if not (isinstance(point_size, (int, float)) and 0 < float(point_size) <= 20):
            raise ConfigError(f"point_size ({point_size!r}) must be in (0, 20]")
        self.cameras: cams.CameraMode = "sphere" if cameras == "sphere" else "orbit"
        self.width, self.height = parse_size(size)
        self.up_option = str(up)
        cams.up_vector(self.up_option)  # validate now
        self.elevation_deg = number("elevation_deg", elevation_deg)
        self.azimuth_deg = number("azimuth_deg", azimuth_deg)
        self.fov_deg = number("fov_deg", fov_deg)
        if not 1.0 <= self.fov_deg <= 170.0:
            raise ConfigError(f"fov_deg ({fov_deg}) must be in [1, 170]")
        self.fill = number("fill", fill)
        if not 0.05 <= self.fill <= 1.0:
            raise ConfigError(f"fill ({fill}) must be in [0.05, 1]")
        self.background = parse_color(background)
        self.point_size = float(point_size)
        self.renderer = renderer
        self.filament_timeout_s = number("filament_timeout_s", filament_timeout_s)
        if not 0 < self.filament_timeout_s <= 86400:
            raise ConfigError(f"filament_timeout_s ({filament_timeout_s}) must be in (0, 86400]")
        self.intrinsics = cams.intrinsics_for(self.width, self.height, self.fov_deg)
        self._info: SourceInfo | None = None
        self._geometry: Geometry | None = None
        self._poses_norm: np.ndarray | None = None
        self._poses_file: np.ndarray | None = None
        self._up: np.ndarray | None = None
        self._centre = np.zeros(3)
        self._scale = 1.0
        self._renderer: Any = None
        self._filament_failed = False

    # -- metadata -------------------------------------------------------------------------
    def info(self) -> SourceInfo:
        if self._info is None:
            with np.errstate(all="ignore"):  # degenerate geometry: no RuntimeWarning leaks
                self._info = self._prepare()
        return self._info

    def _prepare(self) -> SourceInfo:
        g = load_geometry(self.path)
        pts = used_points(g)
        frame_pts, sensor = frame_and_sensor(
            self.path, g.kind, pts, g.vertex_normals, self.placement, g.notes
        )
        lo, hi = frame_pts.min(axis=0), frame_pts.max(axis=0)
        centre = (lo + hi) / 2.0
        radius = float(np.sqrt(((frame_pts - centre) ** 2).sum(axis=1).max()))
        magnitude = max(1.0, float(np.abs(centre).max()))
        degenerate = radius <= 1e-9 * magnitude
        if degenerate:
            g.notes.append("object is a single point")
            log.warning("%s: object is a single point", self.path)
            radius = 1.0
        if g.kind == "mesh":  # a mesh on a single point has no area either: a point is drawn
            flat = degenerate
            if not degenerate:
                v = (g.vertices - centre) / radius
                tri = v[g.triangles]
                area = np.linalg.norm(
                    np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1
                )
                flat = float(area.sum()) < 1e-10
                if flat:
                    g.notes.append("all faces have zero area: rendered as points")
                    log.warning("%s: all faces have zero area: rendered as points", self.path)
            if flat:
                g.kind = "points"
                g.vertices = pts
                g.vertex_normals = None
                g.vertex_colors = None
        self._centre, self._scale = centre, radius
        self._geometry = g
        up, axis, up_source = choose_up(self.up_option, self.path, g, sensor)
        self._up = up
        if sensor is not None:
            dirs = cap_directions(self.num_views, -sensor.forward, up)
            placement: dict[str, Any] = {
                "placement": "sensor-side",
                "reason": sensor.reason,
                "sensor_forward": [round(float(c), 6) for c in sensor.forward],
                "cone_deg": CAP_DEG,
            }
            if sensor.position is not None:
                placement["sensor_position"] = [round(float(c), 6) for c in sensor.position]
        else:
            dirs = cams.view_directions(
                self.cameras,
                self.num_views,
                up,
                elevation_deg=self.elevation_deg,
                azimuth_deg=self.azimuth_deg,
            )
            placement = {"placement": self.cameras, "reason": around_reason(g.kind, self.placement)}
        rots = cams.look_at_rotations(dirs, up)
        fit_pts = (frame_pts[:: max(1, len(frame_pts) // _FIT_POINTS)] - centre) / radius
        distance = (
            3.0
            if degenerate
            else cams.fit_distance(fit_pts, rots, dirs, self.intrinsics, self.fill)
        )
        self._poses_norm = cams.poses(dirs, rots, distance)
        self._poses_file = cams.to_file_frame(self._poses_norm, centre, radius)
        intr = self.intrinsics.to_json()
        views = tuple(
            ViewInfo(name=f"view_{i:03d}", pose_c2w=as_matrix4(p), intrinsics=intr)
            for i, p in enumerate(self._poses_file)
        )
        extra: dict[str, Any] = {
            "geometry": g.kind,
            "num_points" if g.kind == "points" else "num_triangles": g.num_primitives,
            "num_vertices": len(g.vertices),
            "vertex_colors": g.vertex_colors is not None,
            "textured": g.has_texture,
            "cameras": "sensor-side" if sensor is not None else self.cameras,
            "placement": placement,
            "up": axis,
            "up_source": up_source,
            "fov_deg": self.fov_deg,
            "centre": [float(c) for c in centre],
            "radius": float(radius),
            "camera_distance": float(distance * radius),
            "renderer": self.renderer,
        }
        if self.cameras == "orbit" and sensor is None:
            extra["elevation_deg"] = self.elevation_deg
        if g.notes:
            extra["notes"] = list(g.notes)
        # on every record of this source: how the cameras were placed and why
        extra["record"] = {
            k: extra[k] for k in ("geometry", "placement", "up", "up_source", "notes") if k in extra
        }
        return SourceInfo(
            id=str(self.path),
            kind="render",
            num_frames=self.num_views,
            width=self.width,
            height=self.height,
            views=views,
            backend=self.renderer,
            extra=extra,
        )

    # -- rendering ------------------------------------------------------------------------
    def _raycaster(self) -> Any:
        if self._renderer is None:
            from framepipe.sources.render.raycast import MeshRenderer, PointRenderer

            self.info()
            g = self._geometry
            assert g is not None and self._up is not None
            v = (g.vertices - self._centre) / self._scale
            if g.kind == "mesh":
                self._renderer = MeshRenderer(g, v, up=self._up, nthreads=self.threads)
            else:
                self._renderer = PointRenderer(
                    v,
                    up=self._up,
                    colors=g.vertex_colors,
                    normals=g.vertex_normals,
                    point_scale=self.point_size,
                )
        return self._renderer

    def _check(self, indices: Sequence[int]) -> list[int]:
        n = self.info().num_frames
        out = []
        for i in frame_indices(indices, self.path):
            if not 0 <= i < n:
                raise DecodeError(self.path, f"view {i} out of range (0..{n - 1})")
            out.append(i)
        return out

    def render_views(
        self, indices: Sequence[int], *, width: int | None = None, height: int | None = None
    ) -> np.ndarray:
        """Views ``indices`` as uint8 N x H x W x 3, at the source's size or another."""
        idx = self._check(indices)
        intr = self.intrinsics
        if width is not None and height is not None:
            intr = intr.scaled(int(width), int(height))
        out = np.empty((len(idx), intr.height, intr.width, 3), np.uint8)
        if not idx:
            return out
        done: dict[int, np.ndarray] = {}
        if self.renderer == "filament" and not self._filament_failed and intr is self.intrinsics:
            done = self._render_filament(sorted(set(idx)))
        assert self._poses_norm is not None
        for k, i in enumerate(idx):
            if i not in done:
                with np.errstate(all="ignore"):
                    done[i] = self._raycaster().render(
                        self._poses_norm[i],
                        intr,
                        background=self.background,
                        supersample=self.supersample,
                    )
            out[k] = done[i]
        return out

    def read(self, indices: Sequence[int]) -> FrameBatch:
        info = self.info()
        idx = self._check(indices)
        frames = self.render_views(idx)
        assert info.views is not None
        return FrameBatch(frames, tuple(idx), views=tuple(info.views[i] for i in idx))

    def _read_small(self, indices: list[int], size: tuple[int, int]) -> np.ndarray:
        """Views rendered directly at ``size`` (width, height)."""
        return self.render_views(indices, width=size[0], height=size[1])

    def _render_filament(self, indices: list[int]) -> dict[int, np.ndarray]:
        from framepipe.sources.render.filament import FilamentError, render_isolated

        assert self._poses_file is not None
        try:
            frames = render_isolated(
                self.path,
                [self._poses_file[i] for i in indices],
                self.intrinsics,
                background=self.background,
                point_size_px=max(1.0, 2.0 * self.point_size),
                timeout_s=self.filament_timeout_s,
            )
        except FilamentError as exc:
            self._filament_failed = True
            log.warning("%s: filament renderer failed (%s); using ray casting", self.path, exc)
            return {}
        return dict(zip(indices, frames))

    # -- what the views see ---------------------------------------------------------------
    def visible_surface(self, *, resolution: int = 64, voxels: int = 32) -> VisibleSurface:
        """The surface every candidate view sees, for choosing views that cover it.

        Every candidate view is ray cast (splatted for clouds) at ``resolution`` pixels;
        each hit is binned into a ``voxels``^3 grid over the object and by which side of the
        surface it shows (the dominant axis of its normal, turned to the camera), weighted
        by how squarely it is seen (``|cos|``, the best hit of each cell).
        """
        from framepipe.sources.render.raycast import Visible

        if not 8 <= int(resolution) <= 1024:
            raise ConfigError(f"resolution ({resolution}) must be in [8, 1024]")
        if not 2 <= int(voxels) <= 512:
            raise ConfigError(f"voxels ({voxels}) must be in [2, 512]")
        info = self.info()
        assert self._poses_norm is not None
        res, voxels = int(resolution), int(voxels)
        small = self.intrinsics.scaled(res, max(8, round(res * self.height / self.width)))
        rend = self._raycaster()
        keys_per_view: list[np.ndarray] = []
        w_per_view: list[np.ndarray] = []
        for i in range(info.num_frames):
            vis: Visible = rend.visible(self._poses_norm[i], small)
            # the offset keeps planes through the centre (common: symmetric objects) off a
            # cell boundary, where float noise would split one surface into two cells
            cell = np.floor((vis.points + 1.0) * 0.5 * voxels + 0.37).astype(np.int64)
            cell = np.clip(cell, 0, voxels)
            axis = np.abs(vis.normals).argmax(axis=1)
            sign = np.take_along_axis(vis.normals, axis[:, None], axis=1)[:, 0] > 0
            side = axis * 2 + sign.astype(np.int64)
            g = voxels + 1
            key = ((cell[:, 0] * g + cell[:, 1]) * g + cell[:, 2]) * 6 + side
            order = np.lexsort((-vis.cos, key))
            key, cos = key[order], vis.cos[order]
            first = np.ones(len(key), bool)
            first[1:] = key[1:] != key[:-1]
            keys_per_view.append(key[first])
            w_per_view.append(cos[first].astype(np.float64))
        return VisibleSurface(tuple(keys_per_view), tuple(w_per_view), res, voxels)

    def close(self) -> None:
        self._renderer = None

    def __repr__(self) -> str:
        return f"RenderSource({str(self.path)!r}, renderer={self.renderer!r})"
