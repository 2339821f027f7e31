"""Multi-view scenes a careful user still meets: TIFF views with an orientation tag (turned
once, as any viewer shows them), names whose case or digits make the natural order subtle,
and pose files that list names the system refuses or nest JSON absurdly deep."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import scene_media as sm
from PIL import Image, features

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


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_a_folder_of_avif_images_is_one_scene(tmp_path: Path) -> None:
    """A folder of AVIF stills was not a scene: each file was taken as a one-frame video."""
    scene = tmp_path / "scene"
    scene.mkdir()
    for k in range(3):
        Image.fromarray(sm.view_image(k * 40.0)).save(scene / f"v{k}.avif")
    inputs, _ = discover([tmp_path])
    assert [(i.path, i.kind) for i in inputs] == [(scene, "multiview")]
    with MultiviewSource(scene) as src:
        batch = src.read([2])
    with Image.open(scene / "v2.avif") as img:
        np.testing.assert_array_equal(batch.frames[0], np.asarray(img.convert("RGB")))


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


def test_images_in_subfolders_of_a_scene_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """scene/a.png with scene/inside/b.png and scene/inside/deeper/c.png: discovery takes
    ``scene`` and searches no further, so the two inner images were dropped without a word."""
    scene = tmp_path / "scene"
    sm.write_scene(scene, [(0, 0)], transforms=False)
    sm.write_scene(scene / "inside", [(90, 0)], transforms=False)
    sm.write_scene(scene / "inside" / "deeper", [(180, 0)], transforms=False)
    (scene / "empty").mkdir()
    inputs, _ = discover([tmp_path])
    assert [i.path for i in inputs] == [scene]
    with caplog.at_level("WARNING"):
        info = MultiviewSource(scene).info()
    assert info.num_frames == 1
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "1 subfolder(s) with images not read (inside)" in msg and str(scene) in msg


def test_a_posed_scene_reads_its_image_folder_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sm.write_scene(tmp_path / "images", [(0, 0), (90, 0)], transforms=False)
    frames = [
        {"file_path": f"images/{n}", "transform_matrix": np.eye(4).tolist()}
        for n in sorted(os.listdir(tmp_path / "images"))
    ]
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    with caplog.at_level("WARNING"):
        info = MultiviewSource(tmp_path).info()
    assert info.num_frames == 2 and not caplog.records


_PEAK_SCRIPT = """
import sys
from pathlib import Path
from framepipe.sources.multiview.source import MultiviewSource
def kib(field):  # VmRSS: resident now; VmHWM: the highest (this process's, not inherited)
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(x for x in lines if x.startswith(field)).split()[1])
src = MultiviewSource(Path(sys.argv[1]), max_side=1000)
src.info()
before = kib("VmRSS")
frame = src.read([0]).images()[0]
print(frame.shape[1], frame.shape[0], (kib("VmHWM") - before) * 1024)
"""


@pytest.mark.parametrize("kind", ["gray16", "rgba"])
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_decoding_a_large_png_needs_about_twice_its_pixels_in_memory(
    tmp_path: Path, kind: str
) -> None:
    """A 4000x4000 16-bit depth map or RGBA PNG under max_side: decoding held float64
    copies (16-bit) or four RGBA copies (transparency) at full size, 26 and 20 bytes a
    pixel: a 12000x12000 16-bit PNG, under Pillow's bomb limit, took 3.7 GB to read. Now
    about 7 and 8."""
    import subprocess
    import sys

    side = 4000
    scene = tmp_path / "scene"
    scene.mkdir()
    if kind == "gray16":
        ramp = np.arange(side * side, dtype=np.uint32).reshape(side, side) % 65536
        sm.png16(scene / "depth.png", ramp.astype(np.uint16))
    else:
        rgba = np.zeros((side, side, 4), np.uint8)
        rgba[:, : side // 2] = (200, 10, 10, 255)
        Image.fromarray(rgba).save(scene / "cutout.png", compress_level=1)
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(scene)], capture_output=True, text=True, check=True
    )
    w, h, grown = (int(v) for v in done.stdout.split())
    assert (w, h) == (1000, 1000)
    assert grown < 12 * side * side, f"peak grew {grown / 2**20:.0f} MiB"


def test_a_corrupt_tiff_view_is_skipped_without_a_python_warning(tmp_path: Path) -> None:
    """Pillow warns ("Corrupt EXIF data") as it opens such a file, and Python prints a
    warning on stderr: library code logs, it never prints, so a run's stderr holds the
    one-line skip warning and no Python warning."""
    Image.fromarray(sm.view_image(0)).save(tmp_path / "a.jpg")
    (tmp_path / "b.tif").write_bytes(b"II*\x00" + b"garbage" * 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = MultiviewSource(tmp_path).info()
    assert [v.name for v in info.views or ()] == ["a.jpg"]
    assert [str(w.message) for w in caught] == []
