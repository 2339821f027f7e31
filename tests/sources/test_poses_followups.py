"""COLMAP models with non-finite poses or a garbage image count: one-line errors that name
the file (and the image), raised at once."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import scene_media as sm
from PIL import Image

from framepipe.errors import SourceError
from framepipe.sources import open_source
from framepipe.sources._colmap import colmap_to_c2w
from framepipe.sources.poses import load_poses

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
