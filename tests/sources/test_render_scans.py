"""Single-viewpoint scans and up=auto (issue 11.3).

A synthetic RGB-D capture -- a pinhole camera at the origin in camera coordinates (x right,
y down, z forward), tilted down onto a table with a red mug, NaN where no depth, a few far
flying pixels -- written as an organized ASCII PCD; and a bottle rotated onto every axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d
import pytest
from test_render import write_glb  # tests/sources is on the path (no __init__.py)

from framepipe.errors import ConfigError
from framepipe.sources.render.source import RenderSource

SIZE = 96
MUG = (0.8, 0.15, 0.1)


def depth_capture(w: int = 96, h: int = 72, outliers: int = 20, seed: int = 0) -> dict[str, Any]:
    """Points (camera frame, NaN without depth) of a table top and a mug seen from above."""
    f = 0.85 * w
    u, v = np.meshgrid(np.arange(w) + 0.5 - w / 2, np.arange(h) + 0.5 - h / 2)
    d = np.stack([u / f, v / f, np.ones_like(u)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    a = np.radians(-30.0)  # the camera looks 30 degrees down (y is down)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    dw = d @ rot.T  # rays in a level frame: the table is the plane y = 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        tt = np.where(dw[..., 1] > 1e-6, 0.5 / dw[..., 1], np.inf)
    p = dw * np.where(np.isfinite(tt), tt, 0)[..., None]
    table = np.isfinite(tt) & (np.abs(p[..., 0]) < 0.6) & (p[..., 2] > 0.3) & (p[..., 2] < 1.5)
    t = np.where(table, tt, np.inf)
    ox, oz, r = 0.0, 0.9, 0.1  # the mug: a cylinder along y standing on the table
    qa = dw[..., 0] ** 2 + dw[..., 2] ** 2
    qb = -2 * (dw[..., 0] * ox + dw[..., 2] * oz)
    disc = qb * qb - 4 * qa * (ox**2 + oz**2 - r**2)
    tc = (-qb - np.sqrt(np.maximum(disc, 0))) / (2 * qa)
    yc = (dw * tc[..., None])[..., 1]
    mug = (disc > 0) & (yc > 0.28) & (yc < 0.5) & (tc < t)
    t = np.where(mug, tc, t)
    pts = (d * np.where(np.isfinite(t), t, np.nan)[..., None]).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    far = rng.choice(np.flatnonzero(np.isfinite(pts[:, 0])), outliers, replace=False)
    pts[far] = d.reshape(-1, 3)[far] * rng.uniform(10, 40, (outliers, 1))  # flying pixels
    cols = np.where(mug.reshape(-1, 1), MUG, (0.55, 0.42, 0.3))
    return {"points": pts, "colors": cols, "width": w, "height": h, "mug": mug.reshape(-1)}


def write_pcd(path: Path, pts: np.ndarray, cols: np.ndarray, w: int, h: int, vp: str = "") -> Path:
    rgb = np.clip(cols * 255 + 0.5, 0, 255).astype(np.uint32)
    packed = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)
    head = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS x y z rgb",
        "SIZE 4 4 4 4",
        "TYPE F F F F",
        "COUNT 1 1 1 1",
        f"WIDTH {w}",
        f"HEIGHT {h}",
        f"VIEWPOINT {vp or '0 0 0 1 0 0 0'}",
        f"POINTS {w * h}",
        "DATA ascii",
    ]
    rows = [
        " ".join("nan" if not np.isfinite(x) else f"{x:.6f}" for x in p) + f" {float(c)!r}"
        for p, c in zip(pts, packed)
    ]
    path.write_text("\n".join(head + rows) + "\n")
    return path


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("scans")
    cap = depth_capture()
    cap["pcd"] = write_pcd(d / "table_mug.pcd", cap["points"], cap["colors"], 96, 72)
    ok = np.isfinite(cap["points"][:, 0])
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cap["points"][ok]))
    pc.colors = o3d.utility.Vector3dVector(cap["colors"][ok])
    cap["ply"] = d / "table_mug.ply"  # the same capture, unorganized, no NaNs
    assert o3d.io.write_point_cloud(str(cap["ply"]), pc)
    return cap


def views(path: Path, **kw: Any) -> tuple[RenderSource, np.ndarray]:
    src = RenderSource(path, size=SIZE, num_views=8, **kw)
    return src, np.asarray(src.read(list(range(8))).frames)


def fill(frames: np.ndarray) -> np.ndarray:
    """Share of each view's pixels that are not background (white)."""
    return np.asarray(np.any(np.abs(frames.astype(int) - 255) > 8, axis=-1).mean(axis=(1, 2)))


def mug_pixels(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(int)
    return np.asarray(((f[..., 0] > 120) & (f[..., 1] < 90) & (f[..., 2] < 90)).sum(axis=(1, 2)))


def test_organized_capture_is_seen_from_the_sensor_side(capture: dict[str, Any]) -> None:
    src, frames = views(capture["pcd"])
    info = src.info()
    place = info.extra["placement"]
    assert place["placement"] == "sensor-side" and info.extra["cameras"] == "sensor-side"
    assert "organized cloud 96x72" in place["reason"] and "VIEWPOINT" in place["reason"]
    assert place["sensor_forward"] == pytest.approx([0, 0, 1])
    assert info.extra["up"] == "-y" and "sensor" in info.extra["up_source"]
    assert any("far outlier" in n for n in info.extra["notes"])
    # every camera sits on the sensor's side (z < the object's centre) within the cone,
    # image up is -y (camera coordinates), and view 0 looks along the sensor's own axis
    centre = np.array(info.extra["centre"])
    for i, v in enumerate(info.views or ()):
        c2w = np.array(v.pose_c2w)
        to_cam = c2w[:3, 3] - centre
        to_cam /= np.linalg.norm(to_cam)
        assert to_cam @ np.array([0, 0, -1.0]) > np.cos(np.radians(place["cone_deg"] + 1))
        assert c2w[:3, 1] @ np.array([0, -1.0, 0]) > 0.5
        if i == 0:
            assert to_cam == pytest.approx([0, 0, -1], abs=1e-9)
    # the scene fills the views (the default orbit around z: 0.3%) and the mug shows in each
    shares = fill(frames)
    assert shares.mean() > 0.12 and shares.min() > 0.03, shares
    assert (mug_pixels(frames) > 40).all(), mug_pixels(frames)


def test_an_orbit_sees_the_scan_edge_on_or_from_behind(capture: dict[str, Any]) -> None:
    """The orbit, still there on request (placement=around, up z as before): it circles
    the sensor's line of sight, so half its views look at the table from below, where the
    mug is hidden; the sensor-side views all show it."""
    src, frames = views(capture["pcd"], placement="around", up="z")
    assert src.info().extra["placement"]["placement"] == "orbit"
    _, new_frames = views(capture["pcd"])
    assert 4 * mug_pixels(frames).min() < mug_pixels(new_frames).min()


def test_far_outliers_do_not_shrink_the_object(capture: dict[str, Any]) -> None:
    src = RenderSource(capture["pcd"], size=SIZE, num_views=4)
    radius = src.info().extra["radius"]
    ok = np.isfinite(capture["points"][:, 0])
    inl = capture["points"][ok]
    inl = inl[np.linalg.norm(inl, axis=1) < 3]
    true_radius = np.linalg.norm(inl.max(axis=0) - inl.min(axis=0)) / 2
    assert radius == pytest.approx(true_radius, rel=0.1)


def test_unorganized_capture_in_camera_coordinates_is_found(capture: dict[str, Any]) -> None:
    src, frames = views(capture["ply"])
    info = src.info()
    assert info.extra["placement"]["placement"] == "sensor-side"
    assert "origin sees" in info.extra["placement"]["reason"]
    assert info.extra["up"] == "-y"
    assert fill(frames).mean() > 0.12 and (mug_pixels(frames) > 40).all()


def test_viewpoint_moves_the_sensor(tmp_path: Path, capture: dict[str, Any]) -> None:
    """A cloud in world coordinates with the sensor's pose as VIEWPOINT: 180 degrees about
    y (qw=0, qy=1) at z = 2 (looking down -z); the points are mirrored to match."""
    pts = capture["points"] * np.array([-1.0, 1.0, -1.0]) + np.array([0, 0, 2.0])
    p = write_pcd(tmp_path / "vp.pcd", pts, capture["colors"], 96 * 72, 1, vp="0 0 2 0 0 1 0")
    info = RenderSource(p, size=SIZE, num_views=4).info()
    place = info.extra["placement"]
    assert place["placement"] == "sensor-side" and "a PCD VIEWPOINT" in place["reason"]
    assert place["sensor_forward"] == pytest.approx([0, 0, -1], abs=1e-6)
    assert place["sensor_position"] == pytest.approx([0, 0, 2])


def test_one_way_normals_are_a_one_sided_capture(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(-1, 1, (3000, 2))
    pts = np.c_[xy, 0.1 * np.sin(3 * xy[:, 0])] + np.array([5.0, 5.0, 5.0])
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.normals = o3d.utility.Vector3dVector(np.tile([0.0, 0.0, 1.0], (len(pts), 1)))
    p = tmp_path / "sheet.ply"
    assert o3d.io.write_point_cloud(str(p), pc)
    info = RenderSource(p, size=SIZE, num_views=4).info()
    assert info.extra["placement"]["placement"] == "sensor-side"
    assert "normals face one way" in info.extra["placement"]["reason"]
    for v in info.views or ():
        assert np.array(v.pose_c2w)[2, 3] > 5.5  # above the sheet, on its normals' side


@pytest.mark.parametrize("offset", [0.0, 8.0])
def test_whole_objects_keep_the_orbit(tmp_path: Path, offset: float) -> None:
    """A sphere sampled all around, at the origin or far from it: not a capture."""
    rng = np.random.default_rng(2)
    s = rng.normal(size=(4000, 3))
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    p = tmp_path / "ball.xyz"
    p.write_text("".join(f"{x} {y} {z}\n" for x, y, z in s + np.full(3, offset)))
    info = RenderSource(p, size=SIZE, num_views=4).info()
    assert info.extra["placement"]["placement"] == "orbit"
    assert info.extra["up"] == "z" and "convention" in info.extra["up_source"]
    assert "notes" not in info.extra  # no outliers, nothing dropped


def test_placement_override_and_bad_value(capture: dict[str, Any]) -> None:
    info = RenderSource(capture["pcd"], size=SIZE, num_views=4, placement="around").info()
    assert info.extra["placement"]["placement"] == "orbit"
    assert "asked for" in info.extra["placement"]["reason"]
    with pytest.raises(ConfigError, match="placement"):
        RenderSource(capture["pcd"], placement="behind")


# -- up=auto ------------------------------------------------------------------------------
def bottle() -> Any:
    """A bottle along +z: a body, a shoulder and a narrow neck (its base is the flat end)."""
    body = o3d.geometry.TriangleMesh.create_cylinder(0.3, 1.0, 32, 2)
    body.translate((0, 0, 0.5))
    shoulder = o3d.geometry.TriangleMesh.create_cone(0.3, 0.2, 32, 1)
    shoulder.translate((0, 0, 1.0))
    neck = o3d.geometry.TriangleMesh.create_cylinder(0.1, 0.4, 32, 1)
    neck.translate((0, 0, 1.2))
    mesh = body + shoulder + neck
    mesh.compute_vertex_normals()
    return mesh


def rotation_onto(target: np.ndarray) -> np.ndarray:
    z = np.array([0.0, 0.0, 1.0])
    if np.allclose(target, z):
        return np.eye(3)
    if np.allclose(target, -z):
        return np.diag([1.0, -1.0, -1.0])
    ax = np.cross(z, target)
    ax /= np.linalg.norm(ax)
    return np.asarray(o3d.geometry.get_rotation_matrix_from_axis_angle(ax * np.arccos(z @ target)))


AXES = {"x": (1, 0, 0), "-x": (-1, 0, 0), "y": (0, 1, 0), "-y": (0, -1, 0), "z": (0, 0, 1)}
AXES["-z"] = (0, 0, -1)


@pytest.mark.parametrize("ext", [".obj", ".ply", ".stl", ".off"])
@pytest.mark.parametrize("axis", list(AXES))
def test_up_auto_stands_a_bottle_upright(tmp_path: Path, axis: str, ext: str) -> None:
    mesh = bottle()
    mesh.rotate(rotation_onto(np.array(AXES[axis], float)), center=(0, 0, 0))
    p = tmp_path / f"bottle{ext}"
    assert o3d.io.write_triangle_mesh(str(p), mesh)
    src = RenderSource(p, size=SIZE, num_views=4, elevation_deg=0)
    info = src.info()
    assert info.extra["up"] == axis and info.extra["up_source"].startswith("shape")
    # upright: in a side view the bottle is taller than wide, its narrow neck on top
    img = src.read([0]).frames[0]
    mask = np.any(img < 200, axis=-1)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert rows.size and (rows[-1] - rows[0]) > 1.5 * (cols[-1] - cols[0])
    width = mask.sum(axis=1)
    top, bottom = rows[0], rows[-1]
    span = bottom - top
    assert width[top + span // 10] < 0.6 * width[bottom - span // 4]
    # the override still wins
    assert RenderSource(p, up="y", num_views=4).info().extra["up"] == "y"


def test_up_auto_keeps_gltf_and_symmetric_shapes_on_convention(tmp_path: Path) -> None:
    cube = o3d.geometry.TriangleMesh.create_box()
    cube.compute_triangle_normals()
    p = tmp_path / "cube.stl"
    assert o3d.io.write_triangle_mesh(str(p), cube)
    info = RenderSource(p, num_views=4).info()
    assert info.extra["up"] == "z" and "convention" in info.extra["up_source"]
    mesh = bottle()
    mesh.rotate(rotation_onto(np.array([1.0, 0, 0])), center=(0, 0, 0))
    g = write_glb(
        tmp_path / "bottle.glb",
        np.asarray(mesh.vertices).tolist(),
        np.asarray(mesh.triangles).tolist(),
    )
    assert RenderSource(g, num_views=4).info().extra["up"] == "y"  # glTF is y-up


def silhouette(img: np.ndarray) -> tuple[int, int]:
    """(height, width) in pixels of what is drawn on a black background."""
    mask = np.any(img > 30, axis=-1)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert rows.size
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("ext", [".obj", ".ply", ".stl", ".off"])
@pytest.mark.parametrize(
    ("dims", "axis"), [((0.5, 1, 2), "x"), ((1, 0.5, 2), "y"), ((1, 2, 0.5), "z")]
)
def test_up_auto_lays_a_box_on_its_largest_face(
    tmp_path: Path, dims: tuple[float, float, float], axis: str, ext: str
) -> None:
    """A 1 x 2 x 0.5 box rests on one of its two largest faces: they tie, but both say the
    same axis (before: no clear resting face, the format's axis stood it on its smallest)."""
    box = o3d.geometry.TriangleMesh.create_box(*dims)
    box.compute_vertex_normals()
    p = tmp_path / f"box{ext}"
    assert o3d.io.write_triangle_mesh(str(p), box)
    src = RenderSource(p, size=SIZE, num_views=4, elevation_deg=0, background=(0, 0, 0))
    info = src.info()
    assert info.extra["up"] == axis and info.extra["up_source"].startswith("shape")
    for img in src.read([0, 1, 2, 3]).frames:  # lying down: wider than tall from every side
        height, width = silhouette(img)
        assert 1.5 * height < width


@pytest.mark.parametrize("ext", [".ply", ".stl"])
def test_up_auto_lays_a_disc_on_its_face(tmp_path: Path, ext: str) -> None:
    """A coin (radius 1, 0.3 thick, along x) lies flat, not on its rim."""
    disc = o3d.geometry.TriangleMesh.create_cylinder(1.0, 0.3, 48)
    disc.rotate(rotation_onto(np.array([1.0, 0, 0])), center=(0, 0, 0))
    disc.compute_vertex_normals()
    p = tmp_path / f"disc{ext}"
    assert o3d.io.write_triangle_mesh(str(p), disc)
    src = RenderSource(p, size=SIZE, num_views=4, elevation_deg=0, background=(0, 0, 0))
    assert src.info().extra["up"] == "x"
    for img in src.read([0, 1, 2, 3]).frames:
        height, width = silhouette(img)
        assert 2 * height < width


def test_up_auto_lays_a_slab_on_a_face_whose_sign_is_not_guessed(tmp_path: Path) -> None:
    """A tile's two faces tie (it rests on either): it lies on them, with the positive axis
    up whichever way it was built, since a sign guessed from the shape would change views of
    flat models for nothing. (Before the box fix it kept the format's axis: on edge in .ply.)
    A cube's three axes tie: no clear resting face, the format's axis stays."""
    tile = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 0.2)  # thin along z
    p = tmp_path / "tile.off"
    assert o3d.io.write_triangle_mesh(str(p), tile)
    info = RenderSource(p, num_views=4).info()
    assert info.extra["up"] == "z" and info.extra["up_source"].startswith("shape")
    q = tmp_path / "tile.ply"
    assert o3d.io.write_triangle_mesh(str(q), tile)
    assert RenderSource(q, num_views=4).info().extra["up"] == "z"
    tile.translate((0, 0, -0.2))
    tile.rotate(rotation_onto(np.array([-1.0, 0, 0])), center=(0, 0, 0))  # thin along x
    r = tmp_path / "tile_x.obj"
    assert o3d.io.write_triangle_mesh(str(r), tile)
    assert RenderSource(r, num_views=4).info().extra["up"] == "x"
    cube = o3d.geometry.TriangleMesh.create_box()
    for ext, axis in ((".off", "z"), (".ply", "y")):
        c = tmp_path / f"cube{ext}"
        assert o3d.io.write_triangle_mesh(str(c), cube)
        info = RenderSource(c, num_views=4).info()
        assert info.extra["up"] == axis and "no clear resting face" in info.extra["up_source"]


def test_organized_panoramic_lidar_scan_keeps_the_orbit(tmp_path: Path) -> None:
    """HEIGHT 16 rings around the sensor: organized, but seen from inside, no side to take."""
    az = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    el = np.radians(np.linspace(-15, 15, 16))
    a, e = np.meshgrid(az, el)
    r = 5.0 + np.sin(3 * a)
    pts = np.stack([r * np.cos(e) * np.cos(a), r * np.cos(e) * np.sin(a), r * np.sin(e)], -1)
    p = write_pcd(tmp_path / "ring.pcd", pts.reshape(-1, 3), np.full((360 * 16, 3), 0.5), 360, 16)
    info = RenderSource(p, size=SIZE, num_views=4).info()
    assert info.extra["placement"]["placement"] == "orbit"


def test_the_record_says_how_the_cameras_were_placed(capture: dict[str, Any]) -> None:
    from framepipe.clips import whole_clip
    from framepipe.records import ok_record, read_fields
    from framepipe.types import Selection

    info = RenderSource(capture["pcd"], size=SIZE, num_views=4).info()
    sel = Selection((0, 1), "uniform", {"n": 2}, {})
    fields = read_fields(info, whole_clip(info), sel, None, key="k", timings_s={})
    rec = ok_record(info.id, **fields).to_json()
    assert rec["render"]["placement"]["placement"] == "sensor-side"
    assert "organized cloud" in rec["render"]["placement"]["reason"]
    assert rec["render"]["up"] == "-y" and any("outlier" in n for n in rec["render"]["notes"])
