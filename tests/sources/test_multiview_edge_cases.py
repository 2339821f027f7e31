"""Multi-view scenes a careful user still meets: TIFF views with an orientation tag (turned
once, as any viewer shows them), names whose case or digits make the natural order subtle,
and pose files that list names the system refuses or nest JSON absurdly deep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scene_media as sm
from PIL import Image

from framepipe.discovery import discover
from framepipe.errors import SourceError
from framepipe.sources.multiview.source import MultiviewSource
from framepipe.utils import natural_key

# The EXIF/TIFF orientation tag -> the turn that shows the stored pixels upright.
SHOW = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", sorted(SHOW))
@pytest.mark.parametrize("max_side", [0, 16])
def test_tiff_orientation_is_applied_once(tmp_path: Path, orientation: int, max_side: int) -> None:
    stored = Image.fromarray(sm.view_image(0, size=(60, 40)))  # marker top-left as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "v.tif", exif=exif.tobytes())
    shown = np.asarray(stored.transpose(SHOW[orientation]))
    src = MultiviewSource(tmp_path, max_side=max_side)
    info = src.info()
    frame = src.read([0]).images()[0]
    if max_side == 0:
        assert (info.width, info.height) == (shown.shape[1], shown.shape[0])
        assert np.array_equal(frame, shown)
    else:  # reduced by 4 (60 -> 15): the same picture, smaller
        assert (info.width, info.height) == (frame.shape[1], frame.shape[0])
        small = np.asarray(Image.fromarray(shown).reduce(4))
        assert frame.shape == small.shape
        assert np.abs(frame.astype(int) - small.astype(int)).max() <= 1


def test_views_in_natural_order_whatever_the_case(tmp_path: Path) -> None:
    for k, name in enumerate(["img10.png", "IMG3.PNG", "img2.png", "Img1.png", "img20.png"]):
        Image.fromarray(sm.view_image(k * 30.0)).save(tmp_path / name)
    info = MultiviewSource(tmp_path).info()
    names = [v.name for v in info.views or ()]
    assert names == ["Img1.png", "img2.png", "IMG3.PNG", "img10.png", "img20.png"]


def test_natural_key_orders_digit_like_characters_without_error() -> None:
    # "²" is a digit to str.isdigit but not a decimal digit: it is text between numbers
    names = ["x10.png", "x1²2.png", "x2.png", "x1.png", "x01.png"]
    assert sorted(names, key=natural_key) == ["x01.png", "x1.png", "x1²2.png", "x2.png", "x10.png"]


def test_names_with_a_superscript_digit_are_discovered_and_read(tmp_path: Path) -> None:
    for scene in ("s1²2", "s3"):  # scene folders, ordered by discovery
        for k, name in enumerate(["v1²2.png", "v3.png"]):  # views, ordered by the scene
            (tmp_path / scene).mkdir(exist_ok=True)
            Image.fromarray(sm.view_image(k * 90.0)).save(tmp_path / scene / name)
    inputs, _ = discover([tmp_path])
    assert [(i.path.name, i.kind) for i in inputs] == [("s1²2", "multiview"), ("s3", "multiview")]
    info = MultiviewSource(tmp_path / "s3").info()
    assert [v.name for v in info.views or ()] == ["v1²2.png", "v3.png"]


def test_pose_file_listing_a_name_too_long_counts_it_missing(tmp_path: Path) -> None:
    Image.fromarray(sm.view_image(0)).save(tmp_path / "a.png")
    frames = [
        {"file_path": "x" * 5000, "transform_matrix": np.eye(4).tolist()},
        {"file_path": "a.png", "transform_matrix": np.eye(4).tolist()},
    ]
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))
    info = MultiviewSource(tmp_path).info()
    assert [v.name for v in info.views or ()] == ["a.png"]
    assert info.extra["views_with_pose"] == 1 and info.extra["missing_files"] == 1


def test_transforms_json_nested_too_deeply_is_a_one_line_error(tmp_path: Path) -> None:
    Image.fromarray(sm.view_image(0)).save(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SourceError) as err:
        MultiviewSource(tmp_path).info()
    assert str(tmp_path / "transforms.json") in str(err.value)
    assert "nested too deeply" in str(err.value) and "\n" not in str(err.value)
