"""Pose files: NeRF-style transforms.json (and its instant-ngp / nerfstudio variants) and
COLMAP models (text and binary), checked against poses the tests chose."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import scene_media as sm
from PIL import Image

from framepipe.errors import SourceError
from framepipe.sources import open_source
from framepipe.sources.multiview.colmap import colmap_to_c2w
from framepipe.sources.multiview.poses import (
    complete_intrinsics,
    find_pose_file,
    load_poses,
    parse_transforms,
)


def _img(p: Path, size: tuple[int, int] = (40, 30)) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(p)


def _pose_by_name(pf: object, root: Path) -> dict[str, np.ndarray]:
    return {im.path.relative_to(root).as_posix(): im.pose_c2w for im in pf.images}  # type: ignore[attr-defined]


def test_nerf_synthetic_paths_without_extension_and_3x4(tmp_path: Path) -> None:
    poses = [sm.orbit_pose(a) for a in (0, 90, 180)]
    for k in range(3):
        _img(tmp_path / "train" / f"r_{k}.png", (40, 30))
    frames = [
        {"file_path": "./train/r_0", "transform_matrix": poses[0].tolist()},
        {"file_path": "train/r_1.png", "transform_matrix": poses[1][:3].tolist()},  # 3x4
        {"file_path": "./train/r_2", "rotation": 0.1, "transform_matrix": poses[2].tolist()},
    ]
    (tmp_path / "transforms.json").write_text(
        json.dumps({"camera_angle_x": 0.6911, "frames": frames})
    )
    pf = load_poses(tmp_path)
    assert pf is not None and pf.format == "transforms.json" and pf.missing == ()
    got = _pose_by_name(pf, tmp_path)
    assert sorted(got) == ["train/r_0.png", "train/r_1.png", "train/r_2.png"]
    for k in range(3):
        np.testing.assert_allclose(got[f"train/r_{k}.png"], poses[k], atol=1e-12)
    intr = complete_intrinsics(pf.images[0].intrinsics, 40, 30)
    assert intr is not None
    assert intr["fx"] == pytest.approx(0.5 * 40 / math.tan(0.6911 / 2))
    assert (intr["cx"], intr["cy"], intr["width"], intr["height"]) == (20, 15, 40, 30)


def test_instant_ngp_and_nerfstudio_intrinsics(tmp_path: Path) -> None:
    pose = sm.orbit_pose(30)
    _img(tmp_path / "images" / "0001.jpg")
    _img(tmp_path / "images" / "frame_00002.png")
    meta = {
        "fl_x": 500.0,
        "fl_y": 510.0,
        "cx": 21.0,
        "cy": 14.0,
        "w": 40,
        "h": 30,
        "aabb_scale": 16,
        "camera_model": "OPENCV",
        "k1": 0.01,
        "applied_transform": np.eye(4)[:3].tolist(),
        "frames": [
            {"file_path": "./images/0001.jpg", "sharpness": 4.0, "transform_matrix": pose.tolist()},
            {  # nerfstudio: per-frame intrinsics override the common ones
                "file_path": "images/frame_00002.png",
                "fl_x": 300.0,
                "fl_y": 300.0,
                "transform_matrix": pose.tolist(),
            },
        ],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    pf = parse_transforms(tmp_path / "transforms.json")
    by = {im.path.name: complete_intrinsics(im.intrinsics, 1, 1) for im in pf.images}
    assert by["0001.jpg"] == {
        "fx": 500.0,
        "fy": 510.0,
        "cx": 21.0,
        "cy": 14.0,
        "width": 40.0,
        "height": 30.0,
    }
    assert by["frame_00002.png"] is not None
    assert (by["frame_00002.png"]["fx"], by["frame_00002.png"]["cx"]) == (300.0, 21.0)


def test_missing_files_are_reported_not_fatal(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    frames = [
        {"file_path": "a.png", "transform_matrix": np.eye(4).tolist()},
        {"file_path": "gone.png", "transform_matrix": np.eye(4).tolist()},
        {"file_path": "./sub/also_gone", "transform_matrix": np.eye(4).tolist()},
    ]
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))
    pf = load_poses(tmp_path)
    assert pf is not None
    assert [im.path.name for im in pf.images] == ["a.png"]
    assert pf.missing == ("gone.png", "./sub/also_gone")


def test_split_files_are_merged(tmp_path: Path) -> None:
    for split, k in (("train", 0), ("val", 1), ("test", 2)):
        _img(tmp_path / split / f"r_{k}.png")
        meta = {
            "frames": [
                {"file_path": f"./{split}/r_{k}", "transform_matrix": sm.orbit_pose(k).tolist()}
            ]
        }
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(meta))
    assert find_pose_file(tmp_path) == tmp_path / "transforms_train.json"
    pf = load_poses(tmp_path)
    assert pf is not None
    assert sorted(_pose_by_name(pf, tmp_path)) == ["test/r_2.png", "train/r_0.png", "val/r_1.png"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"frames": [', "not valid JSON"),
        ("[1, 2]", "top level must be a JSON object"),
        ('{"camera_angle_x": 1}', "no 'frames' list"),
        ('{"frames": {"a": 1}}', "'frames' must be a list"),
        ('{"frames": [{"transform_matrix": []}]}', "frames[0] has no 'file_path'"),
        ('{"frames": [{"file_path": "a.png"}]}', "frames[0] (a.png) has no 'transform_matrix'"),
        ('{"frames": [{"file_path": "a.png", "transform_matrix": [[1, 2]]}]}', "must be 4x4"),
        (
            '{"frames": [{"file_path": "a.png", "transform_matrix": '
            '[[1,0,0,0],[0,1,0,0],[0,0,1,"x"],[0,0,0,1]]}]}',
            "not a matrix of numbers",
        ),
        (
            '{"frames": [{"file_path": "a.png", "transform_matrix": '
            "[[1,0,0,0],[0,1,0,0],[0,0,1,NaN],[0,0,0,1]]}]}",
            "non-finite",
        ),
    ],
)
def test_malformed_transforms_name_the_file_and_the_problem(
    tmp_path: Path, content: str, expected: str
) -> None:
    _img(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text(content)
    with pytest.raises(SourceError) as err:
        load_poses(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "transforms.json") in msg and expected in msg
    assert "\n" not in msg


def _write_colmap_text(model: Path, entries: list[tuple[int, np.ndarray, str]]) -> None:
    model.mkdir(parents=True, exist_ok=True)
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, ..., NAME"]
    for k, (cam, pose, name) in enumerate(entries, 1):
        q, t = sm.c2w_gl_to_colmap(pose)
        lines.append(" ".join(map(str, (k, *q, *t, cam, name))))
        # points lines: one with points, one empty, one left out (hand-written files)
        if k % 3 == 1:
            lines.append("12.5 33.0 7 100.25 4.5 -1")
        elif k % 3 == 2:
            lines.append("")
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "cameras.txt").write_text(
        "# Camera list\n1 PINHOLE 40 30 50.0 51.0 20.5 15.5\n"
        "2 SIMPLE_RADIAL 40 30 60.0 20 15 0.01\n"
    )


def test_colmap_text_world_to_camera_becomes_camera_to_world(tmp_path: Path) -> None:
    target = (0.5, -1.0, 0.25)
    poses = [sm.orbit_pose(a, 10 + a / 10, 3.0, target) for a in (0, 70, 140, 210, 280)]
    names = ["a.jpg", "b.jpg", "with space.jpg", "d.jpg", "e.jpg"]
    for n in names:
        _img(tmp_path / "images" / n)
    entries = [(1 + k % 2, p, n) for k, (p, n) in enumerate(zip(poses, names))]
    entries.append((1, poses[0], "not_there.jpg"))
    _write_colmap_text(tmp_path / "sparse" / "0", entries)
    pf = load_poses(tmp_path)
    assert pf is not None and pf.format == "colmap-text"
    assert pf.missing == ("not_there.jpg",)
    got = {im.path.name: im for im in pf.images}
    assert sorted(got) == sorted(names)
    for pose, name in zip(poses, names):
        c2w = got[name].pose_c2w
        np.testing.assert_allclose(c2w, pose, atol=1e-9)
        # the camera looks down -z at the target (OpenGL convention)
        view = -c2w[:3, 2]
        to_target = np.asarray(target) - c2w[:3, 3]
        assert np.dot(view, to_target / np.linalg.norm(to_target)) == pytest.approx(1.0)
    assert dict(got["a.jpg"].intrinsics) == {
        "width": 40.0,
        "height": 30.0,
        "fx": 50.0,
        "fy": 51.0,
        "cx": 20.5,
        "cy": 15.5,
    }
    assert dict(got["b.jpg"].intrinsics)["fy"] == 60.0


def test_colmap_camera_centre_is_minus_r_transpose_t() -> None:
    # identity rotation, t = (1, 2, 3): the camera sits at (-1, -2, -3)
    c2w = colmap_to_c2w((1.0, 0.0, 0.0, 0.0), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(c2w[:3, 3], [-1.0, -2.0, -3.0])
    # OpenCV +z (forward) is OpenGL -z: the GL camera's z axis points to world -z
    np.testing.assert_allclose(c2w[:3, 2], [0.0, 0.0, -1.0])
    np.testing.assert_allclose(c2w[:3, 1], [0.0, -1.0, 0.0])


def test_colmap_binary_matches_text(tmp_path: Path) -> None:
    poses = [sm.orbit_pose(a) for a in (0, 120, 240)]
    names = ["x1.png", "x2.png", "x10.png"]
    for n in names:
        _img(tmp_path / "images" / n)
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    data = struct.pack("<Q", len(poses))
    for k, (p, n) in enumerate(zip(poses, names), 1):
        q, t = sm.c2w_gl_to_colmap(p)
        data += struct.pack("<i7di", k, *q, *t, 1) + n.encode() + b"\x00"
        data += struct.pack("<Q", 1) + struct.pack("<ddq", 1.0, 2.0, 5)
    (model / "images.bin").write_bytes(data)
    cams = struct.pack("<Q", 1) + struct.pack("<iiQQ", 1, 1, 40, 30)
    cams += struct.pack("<4d", 50.0, 50.0, 20.0, 15.0)
    (model / "cameras.bin").write_bytes(cams)
    pf = load_poses(tmp_path)
    assert pf is not None and pf.format == "colmap-binary"
    got = {im.path.name: im for im in pf.images}
    for p, n in zip(poses, names):
        np.testing.assert_allclose(got[n].pose_c2w, p, atol=1e-9)
        assert got[n].intrinsics["fx"] == 50.0
    (model / "images.bin").write_bytes(data[:-30])
    with pytest.raises(SourceError, match=r"images\.bin"):
        load_poses(tmp_path)


def test_colmap_garbage_line_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "images.txt").write_text("# header\nthis is not colmap\n")
    with pytest.raises(SourceError) as err:
        load_poses(tmp_path)
    assert "images.txt" in str(err.value) and "line 2" in str(err.value)


def test_transforms_json_wins_over_colmap(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text(
        json.dumps({"frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]})
    )
    (tmp_path / "images.txt").write_text("# empty\n")
    assert find_pose_file(tmp_path) == tmp_path / "transforms.json"
    assert find_pose_file(tmp_path / "a.png") is None


@pytest.mark.parametrize("bad", [{"camera_angle_x": 0.0}, {"fx": 0.0}, {"camera_angle_x": -1.0}])
def test_complete_intrinsics_ignores_degenerate_focal(bad: dict[str, float]) -> None:
    assert complete_intrinsics(bad, 40, 30) is None
    intr = complete_intrinsics({**bad, "fy": 20.0}, 40, 30)
    assert intr is not None and intr["fx"] == intr["fy"] == 20.0


@pytest.mark.parametrize(
    "absurd",
    [
        {"fx": 1e300},
        {"fx": float("inf")},
        {"fx": 1e-9},
        {"fx": 30.0, "width": 0},
        {"fx": 30.0, "height": -5},
        {"fx": 30.0, "width": float("nan")},
        {"fx": 30.0, "cx": 1e9},
        {"camera_angle_x": 1e-12},
    ],
)
def test_complete_intrinsics_refuses_what_is_not_a_camera(absurd: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        complete_intrinsics(absurd, 40, 30)


def test_absurd_intrinsics_are_left_out_of_the_record_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from framepipe.sources.multiview.source import MultiviewSource

    for k in range(3):
        _img(tmp_path / f"v{k}.png")
    frames = [
        {"file_path": f"v{k}.png", "fl_x": fx, "transform_matrix": sm.orbit_pose(30 * k).tolist()}
        for k, fx in enumerate([1e300, -4.0, 35.0])
    ]
    (tmp_path / "transforms.json").write_text(json.dumps({"w": 40, "h": 30, "frames": frames}))
    with caplog.at_level("WARNING"), MultiviewSource(tmp_path) as src:
        views = src.info().views
    assert views is not None
    assert [v.intrinsics is None for v in views] == [True, True, False]
    assert views[2].intrinsics is not None and views[2].intrinsics["fx"] == 35.0
    warned = [r.getMessage() for r in caplog.records if "intrinsics ignored" in r.getMessage()]
    assert len(warned) == 1 and "v0.png" in warned[0] and "1e+300" in warned[0]


# -- COLMAP and transforms.json edge cases -------------------------------------------------
# COLMAP models with non-finite poses or a garbage image count: one-line errors that name the
# file (and the image), raised at once.

NAMES = ("a.png", "b.png", "c.png")
BAD = [
    ("tvec", 1, float("nan")),
    ("tvec", 2, float("inf")),
    ("tvec", 0, float("-inf")),
    ("qvec", 0, float("nan")),
    ("qvec", 3, float("inf")),
]


def _scene(root: Path) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """Three images on disk and their COLMAP (qvec, tvec)."""
    (root / "images").mkdir(parents=True)
    for n in NAMES:
        Image.new("RGB", (40, 30), (10, 20, 30)).save(root / "images" / n)
    return [sm.c2w_gl_to_colmap(sm.orbit_pose(a)) for a in (0, 120, 240)]


def _spoil(
    qt: list[tuple[tuple[float, ...], tuple[float, ...]]], which: str, k: int, value: float
) -> list[tuple[list[float], list[float]]]:
    """The poses with image 2 ('b.png', IMAGE_ID 2) given a non-finite number."""
    out = [(list(q), list(t)) for q, t in qt]
    (out[1][0] if which == "qvec" else out[1][1])[k] = value
    return out


def _images_txt(model: Path, qt: list[tuple[list[float], list[float]]]) -> Path:
    model.mkdir(parents=True, exist_ok=True)
    lines = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"]
    for k, ((q, t), n) in enumerate(zip(qt, NAMES), 1):
        lines += [" ".join(map(str, (k, *q, *t, 1, n))), ""]
    p = model / "images.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def _images_bin(model: Path, qt: list[tuple[list[float], list[float]]]) -> Path:
    model.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<Q", len(qt))
    for k, ((q, t), n) in enumerate(zip(qt, NAMES), 1):
        data += struct.pack("<i7di", k, *q, *t, 1) + n.encode() + b"\x00"
        data += struct.pack("<Q", 1) + struct.pack("<ddq", 1.0, 2.0, 5)
    p = model / "images.bin"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("fmt", ["txt", "bin"])
def test_good_model_still_loads(tmp_path: Path, fmt: str) -> None:
    qt = _scene(tmp_path)
    write = _images_txt if fmt == "txt" else _images_bin
    write(tmp_path / "sparse" / "0", [(list(q), list(t)) for q, t in qt])
    pf = load_poses(tmp_path)
    assert pf is not None and len(pf.images) == 3
    for im in pf.images:
        assert np.all(np.isfinite(im.pose_c2w))


@pytest.mark.parametrize("fmt", ["txt", "bin"])
@pytest.mark.parametrize(("which", "k", "value"), BAD)
def test_non_finite_pose_is_a_one_line_error_naming_file_and_image(
    tmp_path: Path, fmt: str, which: str, k: int, value: float
) -> None:
    qt = _spoil(_scene(tmp_path), which, k, value)
    write = _images_txt if fmt == "txt" else _images_bin
    path = write(tmp_path / "sparse" / "0", qt)
    with pytest.raises(SourceError) as err:
        load_poses(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert "'b.png'" in msg and "IMAGE_ID 2" in msg
    what = "translation" if which == "tvec" else "quaternion"
    assert what in msg and "non-finite" in msg


def test_non_finite_pose_fails_the_scene_when_opened(tmp_path: Path) -> None:
    qt = _spoil(_scene(tmp_path), "tvec", 0, float("nan"))
    path = _images_txt(tmp_path, qt)
    with pytest.raises(SourceError, match="non-finite") as err:
        open_source(tmp_path).info()
    assert str(path) in str(err.value) and "'b.png'" in str(err.value)


def test_non_finite_numbers_rejected_by_colmap_to_c2w() -> None:
    with pytest.raises(ValueError, match=r"translation \(1, nan, 3\)"):
        colmap_to_c2w((1.0, 0.0, 0.0, 0.0), (1.0, float("nan"), 3.0))
    with pytest.raises(ValueError, match=r"quaternion \(inf, 0, 0, 0\)"):
        colmap_to_c2w((float("inf"), 0.0, 0.0, 0.0), (1.0, 2.0, 3.0))


@pytest.mark.parametrize("count", [4, 10**6, 2**63 - 1, 2**64 - 1])
def test_garbage_image_count_fails_at_once(tmp_path: Path, count: int) -> None:
    qt = _scene(tmp_path)
    path = _images_bin(tmp_path / "sparse" / "0", [(list(q), list(t)) for q, t in qt])
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", count) + data[8:])  # 3 records of 102 bytes: room for 4
    with pytest.raises(SourceError) as err:
        load_poses(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    if count == 4:  # fits the arithmetic bound: found missing while reading, as before
        assert "truncated or not a COLMAP images.bin" in msg
    else:  # refused from the count alone, before any record is read
        assert f"claims {count} images but its {len(data)} bytes hold at most 4" in msg


def test_count_that_fits_but_runs_short_is_still_an_error(tmp_path: Path) -> None:
    qt = _scene(tmp_path)
    path = _images_bin(tmp_path / "sparse" / "0", [(list(q), list(t)) for q, t in qt])
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 4) + data[8:] + b"\x00" * 80)  # room, but not a record
    with pytest.raises(SourceError, match=r"images\.bin") as err:
        load_poses(tmp_path)
    assert "\n" not in str(err.value)


def test_garbage_point_count_fails_naming_the_image(tmp_path: Path) -> None:
    qt = _scene(tmp_path)
    model = tmp_path / "sparse" / "0"
    path = _images_bin(model, [(list(q), list(t)) for q, t in qt])
    data = bytearray(path.read_bytes())
    # image 1's record: 8 (count) + 64 + len("a.png\0") then its point count
    at = 8 + 64 + len(NAMES[0]) + 1
    assert struct.unpack_from("<Q", data, at) == (1,)
    struct.pack_into("<Q", data, at, 2**40)
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as err:
        load_poses(tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "'a.png'" in msg and "2D points" in msg


def test_garbage_camera_count_in_cameras_bin(tmp_path: Path) -> None:
    qt = _scene(tmp_path)
    model = tmp_path / "sparse" / "0"
    _images_bin(model, [(list(q), list(t)) for q, t in qt])
    cams = struct.pack("<Q", 2**62) + struct.pack("<iiQQ", 1, 1, 40, 30)
    cams += struct.pack("<4d", 50.0, 50.0, 20.0, 15.0)
    (model / "cameras.bin").write_bytes(cams)
    with pytest.raises(SourceError, match=r"cameras\.bin.*claims \d+ cameras"):
        load_poses(tmp_path)
