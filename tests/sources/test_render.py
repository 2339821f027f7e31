"""Tests for the render source on generated geometry (cube, textured quad, point-cloud sphere)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d  # a core dependency: fail loudly (e.g. libusb-1.0 missing)
import pytest
from PIL import Image

from framepipe.clips import whole_clip
from framepipe.errors import ConfigError, DecodeError, SourceError
from framepipe.samplers.nview import nview
from framepipe.sources.base import open_source, source_kinds
from framepipe.sources.render.source import RenderSource, parse_color

SIZE = 96
RED_TOP_BLUE_BOTTOM = np.zeros((32, 32, 3), np.uint8)
RED_TOP_BLUE_BOTTOM[:16, :, 0] = 255
RED_TOP_BLUE_BOTTOM[16:, :, 2] = 255

# face of a unit cube -> (outward normal, pure colour)
FACES = {
    "+x": ((1, 0, 0), (1.0, 0.0, 0.0)),
    "-x": ((-1, 0, 0), (0.0, 1.0, 1.0)),
    "+y": ((0, 1, 0), (0.0, 1.0, 0.0)),
    "-y": ((0, -1, 0), (1.0, 0.0, 1.0)),
    "+z": ((0, 0, 1), (0.0, 0.0, 1.0)),
    "-z": ((0, 0, -1), (1.0, 1.0, 0.0)),
}


# -- generated media ----------------------------------------------------------------------
def face_coloured_cube() -> Any:
    """A cube [-1, 1]^3 with 4 vertices per face, each face one pure colour."""
    verts: list[np.ndarray] = []
    tris: list[list[int]] = []
    cols: list[tuple[float, float, float]] = []
    for normal, colour in FACES.values():
        n = np.array(normal, float)
        a = np.roll(n, 1)
        b = np.cross(n, a)
        corners = [n + sa * a + sb * b for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        base = len(verts)
        verts += corners
        cols += [colour] * 4
        tris += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
    m = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.array(verts)), o3d.utility.Vector3iVector(np.array(tris))
    )
    m.vertex_colors = o3d.utility.Vector3dVector(np.array(cols))
    m.compute_triangle_normals()
    return m


def write_textured_quad_obj(folder: Path, *, with_texture: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quad.obj").write_text(
        "mtllib quad.mtl\nv -1 -1 0\nv 1 -1 0\nv 1 1 0\nv -1 1 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvn 0 0 1\nusemtl mat0\n"
        "f 1/1/1 2/2/1 3/3/1\nf 1/1/1 3/3/1 4/4/1\n"
    )
    (folder / "quad.mtl").write_text("newmtl mat0\nKd 0.2 0.8 0.2\nmap_Kd tex.png\n")
    if with_texture:
        Image.fromarray(RED_TOP_BLUE_BOTTOM).save(folder / "tex.png")
    return folder / "quad.obj"


def write_glb(
    path: Path,
    positions: Any,
    indices: Any,
    *,
    uvs: Any = None,
    texture: np.ndarray | None = None,
    colors: Any = None,
    base_color: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
    image_uri: str | None = None,
) -> Path:
    """A minimal glTF 2.0 writer (Open3D cannot write textured .glb): binary .glb, or a
    .gltf with the buffer inline and the texture as the external file ``image_uri``."""
    chunks: list[bytes] = []
    views: list[dict[str, Any]] = []
    accessors: list[dict[str, Any]] = []

    def add(data: bytes) -> int:
        off = sum(len(c) for c in chunks)
        chunks.append(data + b"\0" * ((-len(data)) % 4))
        views.append({"buffer": 0, "byteOffset": off, "byteLength": len(data)})
        return len(views) - 1

    def acc(arr: np.ndarray, ctype: int, typ: str) -> int:
        a: dict[str, Any] = {
            "bufferView": add(arr.tobytes()),
            "componentType": ctype,
            "count": int(arr.shape[0]),
            "type": typ,
        }
        if typ == "VEC3" and ctype == 5126:
            a["min"], a["max"] = arr.min(0).tolist(), arr.max(0).tolist()
        accessors.append(a)
        return len(accessors) - 1

    attrs = {"POSITION": acc(np.asarray(positions, np.float32), 5126, "VEC3")}
    if uvs is not None:
        attrs["TEXCOORD_0"] = acc(np.asarray(uvs, np.float32), 5126, "VEC2")
    if colors is not None:
        attrs["COLOR_0"] = acc(np.asarray(colors, np.float32), 5126, "VEC3")
    ind = acc(np.asarray(indices, np.uint32).reshape(-1), 5125, "SCALAR")
    pbr: dict[str, Any] = {"baseColorFactor": list(base_color), "metallicFactor": 0.0}
    doc: dict[str, Any] = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attrs, "indices": ind, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": pbr}],
    }
    if image_uri is not None:
        doc["images"] = [{"uri": image_uri}]
        doc["samplers"] = [{}]
        doc["textures"] = [{"source": 0, "sampler": 0}]
        pbr["baseColorTexture"] = {"index": 0}
    elif texture is not None:
        bio = io.BytesIO()
        Image.fromarray(texture).save(bio, format="PNG")
        doc["images"] = [{"bufferView": add(bio.getvalue()), "mimeType": "image/png"}]
        doc["samplers"] = [{}]
        doc["textures"] = [{"source": 0, "sampler": 0}]
        pbr["baseColorTexture"] = {"index": 0}
    doc["accessors"], doc["bufferViews"] = accessors, views
    binary = b"".join(chunks)
    doc["buffers"] = [{"byteLength": len(binary)}]
    if path.suffix == ".gltf":
        doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(
            binary
        ).decode("ascii")
        path.write_text(json.dumps(doc))
        return path
    js = json.dumps(doc).encode()
    js += b" " * ((-len(js)) % 4)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<III", 0x46546C67, 2, 28 + len(js) + len(binary)))
        fh.write(struct.pack("<II", len(js), 0x4E4F534A) + js)
        fh.write(struct.pack("<II", len(binary), 0x004E4942) + binary)
    return path


def sphere_points(n: int = 20000, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("render")
    cube = face_coloured_cube()
    out = {}
    for ext in ("ply", "off", "stl"):
        out[f"cube.{ext}"] = d / f"cube.{ext}"
        assert o3d.io.write_triangle_mesh(str(out[f"cube.{ext}"]), cube)
    out["quad.obj"] = write_textured_quad_obj(d / "quad")
    out["quad_notex.obj"] = write_textured_quad_obj(d / "quad_notex", with_texture=False)
    quad_p = [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]
    quad_i = [[0, 1, 2], [0, 2, 3]]
    glb_uv = [[0, 1], [1, 1], [1, 0], [0, 0]]  # glTF: v points down the image
    out["quad.glb"] = write_glb(
        d / "quad.glb", quad_p, quad_i, uvs=glb_uv, texture=RED_TOP_BLUE_BOTTOM
    )
    out["quadcol.glb"] = write_glb(
        d / "quadcol.glb",
        quad_p,
        quad_i,
        colors=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]],
    )
    pts = sphere_points()
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.colors = o3d.utility.Vector3dVector((pts + 1) / 2)
    for ext in ("ply", "pcd", "xyz", "pts"):
        out[f"sphere.{ext}"] = d / f"sphere.{ext}"
        assert o3d.io.write_point_cloud(str(out[f"sphere.{ext}"]), pc)
    return out


def open_render(path: Path, **kw: Any) -> RenderSource:
    kw.setdefault("size", SIZE)
    src = open_source(path, "render", **kw)
    assert isinstance(src, RenderSource)
    return src


def object_mask(img: np.ndarray, bg: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    return np.any(img != np.array(bg, np.uint8), axis=2)


def dominant(img: np.ndarray, row: int, col: int) -> tuple[float, float, float]:
    """Mean colour in a 5x5 patch, normalised by its maximum (shading cancels out)."""
    patch = img[row - 2 : row + 3, col - 2 : col + 3].reshape(-1, 3).astype(float).mean(0)
    r, g, b = (float(x) for x in patch / max(patch.max(), 1.0))
    return r, g, b


# -- discovery and metadata ---------------------------------------------------------------
def test_render_kind_claims_3d_extensions(media: dict[str, Path]) -> None:
    from framepipe.sources import guess_kind

    assert "render" in source_kinds()
    for name in ("cube.ply", "cube.off", "cube.stl", "quad.obj", "quad.glb", "sphere.pcd"):
        assert guess_kind(media[name]) == "render", name
    assert guess_kind(media["sphere.xyz"]) == "render"


def test_info_is_lazy_and_describes_views(media: dict[str, Path]) -> None:
    src = open_render(media["cube.ply"], num_views=12)
    info = src.info()
    assert src._renderer is None  # no scene built, nothing rendered
    assert info.kind == "render" and info.num_frames == 12
    assert (info.width, info.height) == (SIZE, SIZE)
    assert info.views is not None and len(info.views) == 12
    assert info.views[3].name == "view_003"
    assert info.extra["geometry"] == "mesh" and info.extra["num_triangles"] == 12
    assert info.extra["vertex_colors"] is True
    intr = info.views[0].intrinsics
    assert intr is not None and intr["width"] == SIZE and intr["cx"] == SIZE / 2


def test_ply_mesh_and_ply_cloud_told_apart(media: dict[str, Path]) -> None:
    assert open_render(media["cube.ply"]).info().extra["geometry"] == "mesh"
    info = open_render(media["sphere.ply"]).info()
    assert info.extra["geometry"] == "points" and info.extra["num_points"] == 20000


def test_poses_look_at_the_object_centre(media: dict[str, Path]) -> None:
    src = open_render(media["cube.ply"], num_views=8)
    info = src.info()
    centre = np.array(info.extra["centre"])
    assert np.allclose(centre, 0.0, atol=1e-9)
    for view in info.views or ():
        c2w = np.array(view.pose_c2w)
        rot = c2w[:3, :3]
        assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        # the camera looks down -z: the centre is straight ahead
        ahead = rot @ np.array([0.0, 0.0, -1.0])
        to_centre = centre - c2w[:3, 3]
        dist = np.linalg.norm(to_centre)
        assert np.allclose(ahead, to_centre / dist, atol=1e-9)
        assert dist == pytest.approx(info.extra["camera_distance"])


def test_orbit_views_differ_by_the_expected_rotation(media: dict[str, Path]) -> None:
    n = 8
    info = open_render(media["cube.ply"], num_views=n, elevation_deg=30).info()
    up = np.array([0.0, 1.0, 0.0])  # .ply convention
    step = 2 * np.pi / n
    c, s = np.cos(step), np.sin(step)
    rot_up = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # rotation about +y
    poses = [np.array(v.pose_c2w) for v in info.views or ()]
    for a, b in itertools.pairwise(poses):
        assert np.allclose(rot_up @ a[:3, :3], b[:3, :3], atol=1e-9)
        assert np.allclose(rot_up @ a[:3, 3], b[:3, 3], atol=1e-9)
    # elevation: camera height over distance
    p0 = poses[0][:3, 3]
    assert np.degrees(np.arcsin(p0 @ up / np.linalg.norm(p0))) == pytest.approx(30.0)


def test_sphere_cameras_cover_the_sphere(media: dict[str, Path]) -> None:
    info = open_render(media["cube.ply"], cameras="sphere", num_views=40).info()
    pos = np.array([np.array(v.pose_c2w)[:3, 3] for v in info.views or ()])
    d = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    assert abs(d.mean(axis=0)).max() < 0.1  # balanced over the sphere
    assert d[:, 1].max() > 0.9 and d[:, 1].min() < -0.9  # reaches both poles


def test_up_option_changes_the_orbit_axis(media: dict[str, Path]) -> None:
    info = open_render(media["cube.ply"], up="z", num_views=4, elevation_deg=0).info()
    assert info.extra["up"] == "z" and info.extra["up_source"] == "chosen"
    for v in info.views or ():
        c2w = np.array(v.pose_c2w)
        assert abs(c2w[2, 3]) < 1e-9  # elevation 0: cameras on the z = 0 plane
        assert c2w[:3, 1] @ np.array([0, 0, 1.0]) == pytest.approx(1.0)  # image up = +z
    auto = open_render(media["cube.stl"]).info()
    assert auto.extra["up"] == "z" and "convention" in auto.extra["up_source"]


# -- rendering ----------------------------------------------------------------------------
def test_cube_faces_show_their_colours_from_each_side(media: dict[str, Path]) -> None:
    """y-up: view 0 looks at the +z face, view 1 (90 deg) the +x face, then -z, -x."""
    src = open_render(media["cube.ply"], num_views=4, elevation_deg=0)
    batch = src.read([0, 1, 2, 3])
    assert np.asarray(batch.frames).shape == (4, SIZE, SIZE, 3)
    mid = SIZE // 2
    for img, face in zip(batch.frames, ("+z", "+x", "-z", "-x")):
        assert np.allclose(dominant(img, mid, mid), FACES[face][1], atol=0.08), face
    # from above, the top face shows in the upper part of the frame
    top = open_render(media["cube.ply"], num_views=4, elevation_deg=45).read([0]).frames[0]
    rows = np.nonzero(object_mask(top).any(axis=1))[0]
    upper = rows.min() + (rows.max() - rows.min()) // 6
    assert np.allclose(dominant(top, upper, mid), FACES["+y"][1], atol=0.1)


@pytest.mark.parametrize("name", ["cube.ply", "cube.off", "cube.stl", "sphere.ply", "sphere.pcd"])
def test_object_fills_a_sensible_share_and_background_is_background(
    media: dict[str, Path], name: str
) -> None:
    src = open_render(media[name], num_views=6)
    for img in src.read(range(6)).frames:
        mask = object_mask(img)
        share = mask.mean()
        assert 0.15 < share < 0.9, share
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
        assert 0.6 * SIZE <= extent <= 0.95 * SIZE, extent  # fills most of the frame
        # a margin of pure background all around
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert (border == 255).all()


def test_background_option(media: dict[str, Path]) -> None:
    img = open_render(media["cube.ply"], background=[10, 20, 30]).read([0]).frames[0]
    assert tuple(img[0, 0]) == (10, 20, 30)
    assert object_mask(img, (10, 20, 30)).mean() > 0.15
    assert tuple(parse_color("#ff8000")) == (255, 128, 0)
    assert tuple(parse_color("black")) == (0, 0, 0)
    with pytest.raises(ConfigError, match="background"):
        parse_color([300, 0, 0])


@pytest.mark.parametrize("name", ["quad.obj", "quad.glb"])
def test_texture_shows_where_it_should(media: dict[str, Path], name: str) -> None:
    src = open_render(media[name], num_views=4, elevation_deg=0)
    assert src.info().extra["textured"] is True
    img = src.read([0]).frames[0]
    mid = SIZE // 2
    rows = np.nonzero(object_mask(img)[:, mid])[0]
    top, bottom = rows.min(), rows.max()
    q = (bottom - top) // 4
    # OBJ: Kd (0.2, 0.8, 0.2) multiplies the texture
    red = dominant(img, top + q, mid)
    blue = dominant(img, bottom - q, mid)
    assert red[0] == 1.0 and red[2] < 0.1, red
    assert blue[2] == 1.0 and blue[0] < 0.1, blue
    # seen from behind (view 2), the texture is mirrored left-right but not flipped
    back = src.read([2]).frames[0]
    assert dominant(back, top + q, mid)[0] == 1.0
    # edge-on (view 1): almost nothing
    assert object_mask(src.read([1]).frames[0]).mean() < 0.05


def test_vertex_colours_show_where_they_should(media: dict[str, Path]) -> None:
    src = open_render(media["quadcol.glb"], num_views=4, elevation_deg=0)
    img = src.read([0]).frames[0]
    mask = object_mask(img)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    inset = 4
    corners = {
        (rows.max() - inset, cols.min() + inset): (1, 0, 0),  # (-1, -1) red
        (rows.max() - inset, cols.max() - inset): (0, 1, 0),  # (1, -1) green
        (rows.min() + inset, cols.max() - inset): (0, 0, 1),  # (1, 1) blue
        (rows.min() + inset, cols.min() + inset): (1, 1, 0),  # (-1, 1) yellow
    }
    for (r, c), colour in corners.items():
        got = np.array(dominant(img, r, c))
        assert np.argmax(got) == int(np.argmax(colour)), (got, colour)
        assert np.allclose(got, colour, atol=0.35), (got, colour)


def test_point_cloud_colours_follow_positions(media: dict[str, Path]) -> None:
    # colour = (p + 1) / 2: the front (+z, y-up) of the sphere is blue-ish, the right red-ish
    img = open_render(media["sphere.ply"], num_views=4, elevation_deg=0).read([0]).frames[0]
    mid = SIZE // 2
    centre = np.array(dominant(img, mid, mid))
    assert centre[2] == 1.0 and centre[2] > centre[0] + 0.3
    cols = np.nonzero(object_mask(img)[mid])[0]
    right = np.array(dominant(img, mid, cols.max() - 6))
    assert right[0] == 1.0


def test_point_formats_render_alike(media: dict[str, Path]) -> None:
    ref = open_render(media["sphere.ply"]).read([5]).frames[0]
    for name in ("sphere.pcd", "sphere.xyz", "sphere.pts"):
        img = open_render(media[name]).read([5]).frames[0]
        share_ref, share = object_mask(ref).mean(), object_mask(img).mean()
        assert share == pytest.approx(share_ref, rel=0.1), name


def test_read_is_deterministic_and_keeps_order(media: dict[str, Path]) -> None:
    src = open_render(media["cube.ply"], num_views=6)
    a = src.read([4, 1, 4])
    assert a.indices == (4, 1, 4)
    assert a.views is not None and [v.name for v in a.views] == ["view_004", "view_001", "view_004"]
    assert np.array_equal(a.frames[0], a.frames[2])
    assert not np.array_equal(a.frames[0], a.frames[1])
    b = open_render(media["cube.ply"], num_views=6).read([4])
    assert np.array_equal(a.frames[0], b.frames[0])
    with pytest.raises(DecodeError, match="out of range"):
        src.read([6])


def test_supersampling_smooths_edges(media: dict[str, Path]) -> None:
    plain = open_render(media["cube.ply"]).read([3]).frames[0]
    smooth = open_render(media["cube.ply"], supersample=2).read([3]).frames[0]
    assert smooth.shape == plain.shape
    assert object_mask(smooth).mean() == pytest.approx(object_mask(plain).mean(), rel=0.1)

    def distinct(img: np.ndarray) -> int:
        return len(np.unique(img.reshape(-1, 3), axis=0))

    assert distinct(smooth) > distinct(plain)  # blended edge pixels


def test_read_small_renders_at_the_small_size(media: dict[str, Path]) -> None:
    src = open_render(media["cube.ply"], num_views=8)
    small = src.read_small(0, 8, size=(32, 24), step=2)
    assert small.shape == (4, 24, 32, 3) and small.dtype == np.uint8
    assert 0.1 < object_mask(small[0]).mean() < 0.9


# -- view choice --------------------------------------------------------------------------
def choose_views(src: RenderSource, n: int, **params: Any) -> Any:
    """The n-view sampler on a render source: greedy coverage of what its views see."""
    info = src.info()
    return nview(info, whole_clip(info), n=n, source=src, **params)


def test_visible_surface_is_measured_per_view(media: dict[str, Path]) -> None:
    src = open_render(media["quad.obj"], num_views=16, elevation_deg=0)
    surface = src.visible_surface(resolution=32, voxels=8)
    assert len(surface) == 16 and (surface.resolution, surface.voxels) == (32, 8)
    for cells, weights in zip(surface.cells, surface.weights):
        assert list(cells) == sorted(set(cells.tolist())) and len(weights) == len(cells)
        assert ((weights >= 0) & (weights <= 1 + 1e-6)).all()
    assert len(surface.cells[0]) > len(surface.cells[4])  # face-on sees more than edge-on
    with pytest.raises(ConfigError, match="resolution"):
        src.visible_surface(resolution=4)
    with pytest.raises(ConfigError, match="voxels"):
        src.visible_surface(voxels=1)


def test_choose_views_prefers_informative_views(media: dict[str, Path]) -> None:
    src = open_render(media["quad.obj"], num_views=16, elevation_deg=0)
    one = choose_views(src, 1)
    assert one.indices[0] in (0, 8)  # face-on, not edge-on
    two = choose_views(src, 2)
    assert set(two.indices) == {0, 8}  # front and back: both sides of the quad
    assert two.extra["coverage"] > one.extra["coverage"]
    again = choose_views(open_render(media["quad.obj"], num_views=16, elevation_deg=0), 2)
    assert again == two  # deterministic


def test_choose_views_on_a_cloud_spreads_around(media: dict[str, Path]) -> None:
    src = open_render(media["sphere.ply"], num_views=24)
    sel = choose_views(src, 4, resolution=48)
    assert len(set(sel.indices)) == 4 and list(sel.indices) == sorted(sel.indices)
    gaps = np.diff([*sel.indices, sel.indices[0] + 24])
    assert gaps.min() >= 4  # no two picks side by side on the orbit
    assert 0 < sel.extra["coverage"] <= 1
    # more than there are: all of them, completed by the overflow policy as for any clip
    assert choose_views(src, 30, overflow="all").indices == tuple(range(24))
    assert choose_views(src, 30).indices == (*range(24), *[23] * 6)  # repeat_last, the default


# -- bad input ----------------------------------------------------------------------------
def test_missing_texture_renders_with_a_note(
    media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        src = open_render(media["quad_notex.obj"], num_views=4, elevation_deg=0)
        info = src.info()
    assert any("tex.png is missing" in n for n in info.extra["notes"])
    assert "missing" in caplog.text
    img = src.read([0]).frames[0]
    mid = SIZE // 2
    assert np.allclose(dominant(img, mid, mid), (0.25, 1.0, 0.25), atol=0.05)  # Kd colour


def test_gltf_with_external_texture_and_with_it_missing(tmp_path: Path) -> None:
    quad_p = [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]
    quad_i = [[0, 1, 2], [0, 2, 3]]
    uv = [[0, 1], [1, 1], [1, 0], [0, 0]]
    Image.fromarray(RED_TOP_BLUE_BOTTOM).save(tmp_path / "tex.png")
    good = write_glb(tmp_path / "good.gltf", quad_p, quad_i, uvs=uv, image_uri="tex.png")
    bad = write_glb(tmp_path / "bad.gltf", quad_p, quad_i, uvs=uv, image_uri="gone.png")
    src = open_render(good, num_views=4, elevation_deg=0)
    assert src.info().extra["textured"] is True and "notes" not in src.info().extra
    img = src.read([0]).frames[0]
    mid = SIZE // 2
    rows = np.nonzero(object_mask(img)[:, mid])[0]
    q = (rows.max() - rows.min()) // 4
    assert dominant(img, rows.min() + q, mid)[0] == 1.0  # red on top
    assert dominant(img, rows.max() - q, mid)[2] == 1.0  # blue below
    src = open_render(bad, num_views=4, elevation_deg=0)
    assert any("gone.png is missing" in n for n in src.info().extra["notes"])
    img = src.read([0]).frames[0]
    assert object_mask(img).mean() > 0.2  # plain material colour, still drawn


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.ply", b"", "empty"),
        ("garbage.ply", b"this is not a ply file\n", "not a PLY"),
        ("garbage.obj", b"\x00\x01\x02 binary junk", "no geometry"),
        ("garbage.glb", b"glTF\x02\x00\x00\x00junk", "truncated binary glTF"),
        ("nan.xyz", b"nan nan nan\nnan 1 2\n", "NaN"),
        ("novert.ply", b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n", "no points"),
    ],
)
def test_bad_files_raise_clear_errors(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(SourceError, match=match) as exc:
        open_render(p).info()
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_render(tmp_path / "nope.ply").info()


def test_nan_points_are_dropped(tmp_path: Path) -> None:
    pts = sphere_points(2000)
    lines = [f"{x} {y} {z}" for x, y, z in pts] + ["nan 0 0", "inf 1 1"]
    p = tmp_path / "some_nan.xyz"
    p.write_text("\n".join(lines) + "\n")
    info = open_render(p).info()
    assert info.extra["num_points"] == 2000
    assert any("NaN" in n for n in info.extra["notes"])
    assert open_render(p).read([0]).frames[0].min() < 255


def test_mesh_without_faces_is_drawn_as_points(tmp_path: Path) -> None:
    p = tmp_path / "points_only.obj"
    p.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in sphere_points(500)))
    src = open_render(p)
    info = src.info()
    assert info.extra["geometry"] == "points"
    assert object_mask(src.read([0]).frames[0]).mean() > 0.05


def _renders_one_point(p: Path, text: str) -> None:
    """``text`` written to ``p`` renders as one small point, with a note saying so."""
    p.write_text(text)
    src = open_render(p)
    assert "single point" in " ".join(src.info().extra["notes"])
    img = src.read([0]).frames[0]
    assert 0 < object_mask(img).sum() < img.shape[0] * img.shape[1] * 0.2


def test_single_point_and_flat_objects_render(tmp_path: Path) -> None:
    _renders_one_point(tmp_path / "one.xyz", "1 2 3\n")
    # a flat disc of points in the z = 0 plane (up z: seen from 20 degrees above)
    flat = tmp_path / "flat.xyz"
    ang = np.arange(3000) * 2.399963  # golden angle: an even disc
    rad = np.sqrt((np.arange(3000) + 0.5) / 3000)
    flat.write_text("".join(f"{r * np.cos(a)} {r * np.sin(a)} 0\n" for r, a in zip(rad, ang)))
    img = open_render(flat).read([0]).frames[0]
    assert 0.05 < object_mask(img).mean() < 0.9


def test_mesh_whose_faces_all_sit_on_one_point_renders_that_point(tmp_path: Path) -> None:
    _renders_one_point(tmp_path / "one.obj", "v 1 2 3\nv 1 2 3\nf 1 1 2\n")


def test_bad_options_are_config_errors(media: dict[str, Path]) -> None:
    for kw in (
        {"cameras": "spiral"},
        {"renderer": "blender"},
        {"up": "w"},
        {"size": 4},
        {"supersample": 0},
        {"num_views": 0},
        {"fov_deg": 0},
    ):
        with pytest.raises(ConfigError):
            open_render(media["cube.ply"], **kw)


def test_unknown_options_are_warned_about(
    media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        open_render(media["cube.ply"], backend="pyav")
    assert "ignores option(s) backend" in caplog.text
    assert "(known: azimuth_deg, background, cameras, elevation_deg, " in caplog.text


def test_filament_failure_falls_back_to_ray_casting(
    media: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:

    import framepipe.sources.render.filament as _filament

    def broken(*args: Any, **kwargs: Any) -> list[np.ndarray]:
        raise _filament.FilamentError("renderer process exited with -11: EGL")

    monkeypatch.setattr(_filament, "render_isolated", broken)
    src = open_render(media["cube.ply"], renderer="filament")
    with caplog.at_level(logging.WARNING):
        img = src.read([0]).frames[0]
    assert "using ray casting" in caplog.text
    ref = open_render(media["cube.ply"]).read([0]).frames[0]
    assert np.array_equal(img, ref)


@pytest.mark.slow
def test_filament_for_real_never_crashes_the_caller(media: dict[str, Path]) -> None:
    """Runs Open3D's OffscreenRenderer in its own process: frames either way."""
    src = open_render(media["cube.ply"], renderer="filament", filament_timeout_s=60)
    frames = np.asarray(src.read([0, 1]).frames)
    assert frames.shape == (2, SIZE, SIZE, 3)
    assert object_mask(frames[0]).mean() > 0.1


def test_view_indices_that_are_not_integers_are_refused(media: dict[str, Path]) -> None:
    """As for videos: view 1.5 is a TypeError naming it, not view 1 (nothing is rendered)."""
    src = open_render(media["cube.ply"])
    with pytest.raises(TypeError, match=r"frame indices must be integers, got 1.5 \(float\)"):
        src.read([0, 1.5])  # type: ignore[list-item]
