"""The n-view sampler: covering radius against brute force, clustered captures against the
uniform sampler, known geometry, appearance without poses, fallbacks and surface coverage."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scene_media as sm
from PIL import Image

from framepipe.clips import whole_clip
from framepipe.errors import ConfigError, SamplingError
from framepipe.samplers import get_sampler
from framepipe.samplers.nview import (
    Metric,
    coverage_of,
    covering_radius,
    nview,
    scene_centre,
    view_geometry,
)
from framepipe.samplers.uniform import uniform_indices
from framepipe.sources.base import Source
from framepipe.sources.multiview.source import MultiviewSource
from framepipe.types import ClipSpec, FrameBatch, SourceInfo, ViewInfo, VisibleSurface, as_matrix4


def _info(poses: list[np.ndarray | None]) -> SourceInfo:
    views = tuple(
        ViewInfo(f"v{k}.png", None if p is None else as_matrix4(p)) for k, p in enumerate(poses)
    )
    return SourceInfo(
        id="scene", kind="multiview", num_frames=len(views), width=0, height=0, views=views
    )


def _clustered(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Most cameras bunched on one side of the object, the rest anywhere; name order random."""
    k = int(count * 0.7)
    az = np.concatenate([rng.normal(20, 15, k), rng.uniform(0, 360, count - k)])
    el = np.concatenate([rng.normal(15, 6, k), rng.uniform(-10, 60, count - k)])
    order = rng.permutation(count)
    return [sm.orbit_pose(float(az[i]), float(el[i]), float(rng.uniform(3, 5))) for i in order]


def _radius_deg(poses: list[np.ndarray], chosen: tuple[int, ...] | list[int]) -> float:
    return covering_radius(Metric.angular(view_geometry(np.array(poses))), list(chosen))


@pytest.mark.parametrize("seed", range(12))
def test_covering_radius_within_1_2x_of_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count, n = int(rng.integers(9, 14)), int(rng.integers(2, 5))
    poses = _clustered(rng, count)
    info = _info(list(poses))
    sel = nview(info, whole_clip(info), n=n)
    assert len(set(sel.indices)) == n and list(sel.indices) == sorted(sel.indices)
    metric = Metric.angular(view_geometry(np.array(poses)))
    best = min(covering_radius(metric, c) for c in itertools.combinations(range(count), n))
    got = sel.extra["coverage_radius_deg"]
    assert got == pytest.approx(covering_radius(metric, sel.indices), abs=1e-3)
    assert got <= 1.2 * best + 1e-6
    assert sel.extra["method"] == "poses"


def test_clustered_views_in_name_order_beat_uniform_clearly() -> None:
    # 30 views crowded into 30 degrees of azimuth, then 6 views spread over the other side
    angles = [(a, 15.0) for a in np.linspace(0, 30, 30)]
    angles += [(a, 15.0) for a in (75, 120, 165, 210, 255, 300)]
    poses = [sm.orbit_pose(a, e) for a, e in angles]
    info = _info(list(poses))
    clip = whole_clip(info)
    _, uniform = get_sampler("uniform")
    for n in (3, 4, 6):
        ours = nview(info, clip, n=n).extra["coverage_radius_deg"]
        theirs = _radius_deg(poses, uniform(info, clip, n=n).indices)
        assert ours < 0.6 * theirs, (n, ours, theirs)
        # every view is within 45 degrees of azimuth (43.4 degrees of arc at 15 degrees
        # of elevation) of a chosen one, the best any choice of 3 can do here
        assert ours == pytest.approx(43.387, abs=1e-3)


def test_ring_about_an_off_origin_target_has_the_known_radius() -> None:
    target = (1.0, 2.0, 0.5)
    poses = [sm.orbit_pose(30.0 * k, 0.0, 3.0, target) for k in range(12)]
    centre, ok = scene_centre(np.array(poses))
    assert ok
    np.testing.assert_allclose(centre, target, atol=1e-9)
    info = _info(list(poses))
    for n, expected in ((4, 30.0), (6, 30.0), (3, 60.0), (12, 0.0)):
        sel = nview(info, whole_clip(info), n=n)
        # on a ring, a chosen view every 360/n degrees leaves nothing farther than
        # floor(gap / 2) steps of 30 degrees from a chosen view
        assert sel.extra["coverage_radius_deg"] == pytest.approx(expected, abs=1e-6)
    sel = nview(info, whole_clip(info), n=4)
    steps = np.diff([*list(sel.indices), sel.indices[0] + 12])
    assert sorted(steps.tolist()) == [3, 3, 3, 3]
    assert sel == nview(info, whole_clip(info), n=4)  # deterministic
    assert sel.extra["scene_centre"] == pytest.approx(list(target), abs=1e-6)


def test_viewing_direction_counts_as_well_as_position() -> None:
    # two cameras at the same place, one looking at the object, one looking away
    poses = [sm.orbit_pose(a, 0.0) for a in (0, 90, 180, 270)]
    away = sm.orbit_pose(0, 0.0).copy()
    away[:3, :3] = away[:3, :3] @ np.diag([-1.0, 1.0, -1.0])  # turned 180 degrees about y
    info = _info([*poses, away])
    cov = coverage_of(info, [0, 1, 2, 3])
    # by position alone, the turned camera would be covered by view 0 (0 degrees); by
    # direction it is 180 degrees from view 0 and 90 from views 1 and 3
    assert cov is not None and cov["coverage_radius_deg"] == pytest.approx(90.0, abs=1e-6)
    cov = coverage_of(info, [0])
    assert cov is not None and cov["coverage_radius_deg"] == pytest.approx(180.0, abs=1e-6)


def test_forward_facing_capture_uses_viewing_directions() -> None:
    # cameras on a plane, all looking (nearly) the same way: no point of convergence
    poses = []
    for k in range(10):
        eye = np.array([k * 0.1, 0.0, 0.0])
        poses.append(sm.look_at(eye, eye + np.array([0.02 * (k - 5), 1.0, 0.0])))
    info = _info(list(poses))
    sel = nview(info, whole_clip(info), n=2)
    assert sel.extra["distance"] == "angle between viewing directions"
    metric = Metric.angular(view_geometry(np.array(poses)))
    best = min(covering_radius(metric, c) for c in itertools.combinations(range(10), 2))
    assert math.isfinite(best) and best > 0
    assert sel.extra["coverage_radius_deg"] == pytest.approx(best, abs=1e-3)
    assert sel.indices == (2, 7)  # the quartiles of the fan of directions


def test_big_scene_uses_the_row_by_row_path() -> None:
    rng = np.random.default_rng(7)
    poses = _clustered(rng, 3000)
    info = _info(list(poses))
    clip = whole_clip(info)
    sel = nview(info, clip, n=12)
    uni = uniform_indices(0, 3000, 12)
    assert sel.extra["coverage_radius_deg"] < _radius_deg(poses, uni)


@pytest.fixture()
def coloured_scene(tmp_path: Path) -> Path:
    """Ten nearly identical red views and two odd ones (blue, green), no poses."""
    for k in range(12):
        colour = {3: (20, 40, 230), 8: (30, 220, 40)}.get(k, (200 + k, 30, 30))
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"v{k}.jpg", quality=95)
    return tmp_path


def test_without_poses_views_that_differ_most_in_appearance(coloured_scene: Path) -> None:
    src = MultiviewSource(coloured_scene)
    info = src.info()
    sel = nview(info, whole_clip(info), n=3, source=src)
    assert {3, 8} <= set(sel.indices)
    assert sel.extra["method"] == "appearance" and sel.extra["coverage_radius_deg"] is None
    assert sel.extra["appearance_radius"] < 20
    assert src.decode_counts == {"full": 0, "small": 12}  # thumbnails only
    _, uniform = get_sampler("uniform")
    assert not {3, 8} <= set(uniform(info, whole_clip(info), n=3).indices)


def test_long_clips_compare_every_kth_thumbnail(coloured_scene: Path) -> None:
    src = MultiviewSource(coloured_scene)
    info = src.info()
    sel = nview(info, whole_clip(info), n=2, source=src, max_signatures=4)
    assert src.decode_counts["small"] == 4  # views 0, 3, 6, 9 only
    assert set(sel.indices) <= {0, 3, 6, 9} and 3 in sel.indices
    assert sel.extra["appearance_candidates"] == 4
    with pytest.raises(SamplingError, match="max_signatures"):
        nview(info, whole_clip(info), n=2, source=src, max_signatures=1)


def test_identical_views_or_no_source_fall_back_to_even_spacing(tmp_path: Path) -> None:
    for k in range(10):
        Image.new("RGB", (20, 20), (90, 90, 90)).save(tmp_path / f"v{k}.png")
    src = MultiviewSource(tmp_path)
    info = src.info()
    clip = whole_clip(info)
    for source in (src, None):
        sel = nview(info, clip, n=4, source=source)
        assert sel.indices == tuple(uniform_indices(0, 10, 4))
        assert sel.extra["method"] == "even"
    assert nview(info, clip, n=4, source=src, method="even").indices == (1, 3, 6, 8)


def test_few_posed_views_are_all_kept_and_the_rest_filled(coloured_scene: Path) -> None:
    src = MultiviewSource(coloured_scene)
    base = src.info()
    views = list(base.views or ())
    views[0] = ViewInfo(views[0].name, as_matrix4(sm.orbit_pose(0)))
    views[5] = ViewInfo(views[5].name, as_matrix4(sm.orbit_pose(180)))
    info = SourceInfo(
        id=base.id,
        kind="multiview",
        num_frames=base.num_frames,
        width=40,
        height=30,
        views=tuple(views),
    )
    sel = nview(info, whole_clip(info), n=4, source=src)
    assert {0, 5} <= set(sel.indices) and len(sel.indices) == 4
    assert sel.extra["method"] == "poses+appearance"
    assert {3, 8} <= set(sel.indices)  # the two odd-looking views fill the rest
    assert sel.extra["coverage_radius_deg"] == pytest.approx(0.0)


def test_a_source_measuring_its_surface_gets_the_views_that_cover_it(tmp_path: Path) -> None:
    """The source only measures what each view sees; the sampler chooses (greedy coverage)."""
    calls: list[dict[str, Any]] = []

    class Render(Source):
        kind: ClassVar[str] = "measured"

        def info(self) -> SourceInfo:
            return _info([None] * 5)

        def read(self, indices: Sequence[int]) -> FrameBatch:
            raise AssertionError("nothing is decoded to choose views")

        def visible_surface(self, **kw: Any) -> VisibleSurface:
            calls.append(kw)
            cells = ([0, 1, 2], [2, 3], [0, 1], [4, 5, 6, 7], [7])
            return VisibleSurface(
                tuple(np.array(c, np.int64) for c in cells),
                tuple(np.ones(len(c)) for c in cells),
                kw.get("resolution", 64),
                kw.get("voxels", 32),
            )

    src = Render(tmp_path)
    info = src.info()
    sel = nview(info, whole_clip(info), n=2, source=src, overflow="all", resolution=48)
    assert calls == [{"resolution": 48}]
    assert sel.sampler == "nview" and sel.indices == (0, 3)
    assert sel.params == {"n": 2, "overflow": "all", "resolution": 48, "voxels": 32}
    assert sel.extra["greedy_order"] == [3, 0]  # the most surface first, then the most new
    assert sel.extra["coverage"] == 0.875 and sel.extra["gain"] == [0.5, 0.375]
    # more views asked than the model has: the overflow policy, as for scenes and videos
    clip = whole_clip(info)
    assert nview(info, clip, n=7, source=src).indices == (0, 1, 2, 3, 4, 4, 4)
    assert nview(info, clip, n=7, source=src, overflow="all").indices == (0, 1, 2, 3, 4)
    with pytest.raises(SamplingError, match="fewer than n=7"):
        nview(info, clip, n=7, source=src, overflow="error")


def test_bad_settings_are_clear_errors() -> None:
    info = _info([None] * 5)
    clip = whole_clip(info)
    with pytest.raises(SamplingError, match="needs camera poses"):
        nview(info, clip, n=2, method="poses")
    with pytest.raises(SamplingError, match="unknown nview method"):
        nview(info, clip, n=2, method="best")
    with pytest.raises(SamplingError, match=r"n \(0\) must be >= 1"):
        nview(info, clip, n=0)


def test_clip_range_is_respected() -> None:
    poses = [sm.orbit_pose(30.0 * k) for k in range(12)]
    info = _info(list(poses))
    clip = ClipSpec(info.id, 4, 10)
    sel = nview(info, clip, n=3)
    assert all(4 <= i < 10 for i in sel.indices)


def test_unknown_option_is_a_one_line_error() -> None:
    info = _info([None] * 5)
    with pytest.raises(ConfigError) as exc:
        nview(info, whole_clip(info), n=2, metod="even")
    assert str(exc.value) == (
        "unknown parameter 'metod' for sampler 'nview' (options: method, overflow, "
        "signature_size, max_signatures, resolution, voxels). Did you mean 'method'?"
    )
    assert nview(info, whole_clip(info), n=2, method="even", overflow="all").indices == (1, 3)
