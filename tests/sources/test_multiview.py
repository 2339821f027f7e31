"""The multi-view source: discovery of scene folders, header-only metadata, natural order,
EXIF orientation, colour modes, mixed and huge sizes, bad images, and ``framepipe sample``
on scenes (records list each chosen view and its pose)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scene_media as sm
from click.testing import CliRunner
from PIL import Image, ImageFile, JpegImagePlugin

from framepipe.cli import cli
from framepipe.clips import whole_clip
from framepipe.discovery import discover
from framepipe.errors import ConfigError, DecodeError, SourceError
from framepipe.samplers import get_sampler
from framepipe.sources.base import open_source
from framepipe.sources.multiview.source import MultiviewSource


def _save(path: Path, arr: np.ndarray, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def _marker_corner(img: np.ndarray) -> str:
    """Which corner holds the white marker of :func:`scene_media.view_image`."""
    h, w = img.shape[:2]
    g = img.astype(np.float32).mean(axis=2)
    s = max(1, min(h, w) // 10)
    corners = {
        "tl": g[:s, :s].mean(),
        "tr": g[:s, -s:].mean(),
        "bl": g[-s:, :s].mean(),
        "br": g[-s:, -s:].mean(),
    }
    return max(corners, key=lambda k: corners[k])


# -- discovery --------------------------------------------------------------------------------
def test_discovery_tells_scenes_from_folders_of_inputs(tmp_path: Path) -> None:
    root = tmp_path / "data"
    sm.write_scene(root / "scene_b", [(0, 0), (90, 0)], transforms=False)
    sm.write_scene(root / "scene_a10", [(0, 0), (90, 0)])
    sm.write_scene(root / "scene_a2", [(0, 0)], fmt="jpg", transforms=False)
    # COLMAP layout: the images live in images/, the poses in sparse/0
    colmap = root / "colmap_scene"
    sm.write_scene(colmap / "images", [(0, 0)], transforms=False)
    (colmap / "sparse" / "0").mkdir(parents=True)
    (colmap / "sparse" / "0" / "images.txt").write_text("# no images\n")
    # a folder of videos with a poster image is not a scene
    vids = root / "videos"
    vids.mkdir()
    (vids / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 20)
    _save(vids / "poster.jpg", sm.view_image(0))
    (root / "empty").mkdir()
    inputs, skipped = discover([root])
    got = [(i.path.relative_to(root).as_posix(), i.kind) for i in inputs if i.error is None]
    assert got == [
        ("colmap_scene", "multiview"),
        ("scene_a2", "multiview"),
        ("scene_a10", "multiview"),
        ("scene_b", "multiview"),
        ("videos/clip.mp4", "video"),
    ]
    assert [s.path.name for s in skipped] == ["poster.jpg"]
    assert not [i for i in inputs if i.error]  # an empty sub-folder is nothing, not an error
    (empty,) = discover([root / "empty"])[0]
    assert empty.error is not None and "no video, image scene" in empty.error
    assert MultiviewSource.claims_dir(root / "scene_a2")
    assert not MultiviewSource.claims_dir(root)
    assert not MultiviewSource.claims_dir(vids)


def test_forced_kind_on_a_folder_of_scenes(tmp_path: Path) -> None:
    sm.write_scene(tmp_path / "s1", [(0, 0)])
    sm.write_scene(tmp_path / "s2", [(0, 0)])
    inputs, _ = discover([tmp_path], kind="multiview")
    assert [(i.path.name, i.kind) for i in inputs] == [("s1", "multiview"), ("s2", "multiview")]


# -- metadata ---------------------------------------------------------------------------------
def test_info_reads_headers_only_and_views_are_in_natural_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["img10.png", "img2.jpg", "IMG1.webp", "img3.bmp", "img11.tif"]
    for k, n in enumerate(names):
        _save(tmp_path / n, sm.view_image(k * 40.0))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    loads: list[str] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> object:
        loads.append(str(self.filename))
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    src = MultiviewSource(tmp_path)
    info = src.info()
    assert loads == []  # no pixel was decoded
    assert [v.name for v in info.views or ()] == [
        "IMG1.webp",
        "img2.jpg",
        "img3.bmp",
        "img10.png",
        "img11.tif",
    ]
    assert (info.kind, info.num_frames, info.width, info.height) == ("multiview", 5, 48, 32)
    assert info.extra["poses"] is None and info.extra["views_with_pose"] == 0
    batch = src.read([3, 0])
    assert {Path(f).name for f in loads} == {"img10.png", "IMG1.webp"}
    assert src.decode_counts == {"full": 2, "small": 0}
    assert [v.name for v in batch.views or ()] == ["img10.png", "IMG1.webp"]


def test_uniform_on_a_scene_is_even_in_name_order(tmp_path: Path) -> None:
    names = [f"v{k}.png" for k in range(1, 13)]  # v1 .. v12, natural order != sorted order
    sm.write_scene(tmp_path, [(k * 30.0, 0) for k in range(12)], names=names, transforms=False)
    src = MultiviewSource(tmp_path)
    info = src.info()
    _, uniform = get_sampler("uniform")
    sel = uniform(info, whole_clip(info), n=4)
    assert sel.indices == (1, 4, 7, 10)
    batch = src.read(list(sel.indices))
    assert [v.name for v in batch.views or ()] == ["v2.png", "v5.png", "v8.png", "v11.png"]


def test_unposed_images_are_views_and_missing_frames_are_noted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    poses = sm.write_scene(
        tmp_path,
        [(0, 0), (90, 0), (180, 0)],
        names=["a.png", "b.png", "c.png"],
        file_paths=["a", "b.png", "./c"],
    )
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["frames"].append({"file_path": "gone.png", "transform_matrix": np.eye(4).tolist()})
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    _save(tmp_path / "extra.png", sm.view_image(45))
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        info = MultiviewSource(tmp_path).info()
    assert "1 listed image(s) not found on disk" in caplog.text and "gone.png" in caplog.text
    views = {v.name: v for v in info.views or ()}
    assert sorted(views) == ["a.png", "b.png", "c.png", "extra.png"]
    assert views["extra.png"].pose_c2w is None
    np.testing.assert_allclose(np.array(views["b.png"].pose_c2w), poses[1])
    assert views["a.png"].intrinsics is not None and views["a.png"].intrinsics["width"] == 48
    assert info.extra["views_with_pose"] == 3 and info.extra["missing_files"] == 1


# -- pixels -----------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    upright = sm.view_image(0, size=(60, 40))  # marker top-left when upright
    # store the image as a camera would: pixels turned so that the tag turns them back
    undo = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}
    undo[8] = Image.Transpose.ROTATE_270
    img = Image.fromarray(upright)
    if undo[orientation] is not None:
        img = img.transpose(undo[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "v.jpg", exif=exif.tobytes(), quality=95)
    src = MultiviewSource(tmp_path)
    info = src.info()
    assert (info.width, info.height) == (60, 40)
    frame = src.read([0]).images()[0]
    assert frame.shape == (40, 60, 3)
    assert _marker_corner(frame) == "tl"


def test_colour_modes_become_rgb8(tmp_path: Path) -> None:
    grey = np.full((20, 30), 100, np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "a_gray.png")
    Image.fromarray(grey, "L").convert("1").save(tmp_path / "b_bilevel.png")
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 15:, 3] = 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c_rgba.png")
    pal = Image.fromarray(np.full((20, 30, 3), (10, 200, 30), np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    pal.save(tmp_path / "d_palette.png")
    sm.png16(tmp_path / "e_gray16.png", np.full((20, 30), 65535 // 2, np.uint16))
    rgb16 = np.zeros((20, 30, 3), np.uint16)
    rgb16[..., 2] = 65535
    rgb16[..., 1] = 257 * 50
    sm.png16(tmp_path / "f_rgb16.png", rgb16)
    Image.fromarray(np.full((20, 30), 4000, np.uint16)).save(tmp_path / "g_gray16.tif")
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(tmp_path / "h_cmyk.jpg")
    Image.fromarray(np.full((20, 30, 3), 77, np.uint8)).save(tmp_path / "i.bmp")
    src = MultiviewSource(tmp_path)
    info = src.info()
    batch = src.read(list(range(info.num_frames)))
    assert isinstance(batch.frames, np.ndarray) and batch.frames.shape == (9, 20, 30, 3)
    f = {v.name: img for v, img in zip(batch.views or (), batch.images())}
    assert all(a.dtype == np.uint8 for a in f.values())
    np.testing.assert_array_equal(f["a_gray.png"], 100)
    assert set(np.unique(f["b_bilevel.png"])) <= {0, 255}
    np.testing.assert_array_equal(f["c_rgba.png"][:, :15], 255)  # transparent -> white
    assert (f["c_rgba.png"][:, 15:] == [200, 0, 0]).all()
    assert np.abs(f["d_palette.png"].astype(int) - [10, 200, 30]).max() <= 8
    assert np.abs(f["e_gray16.png"].astype(int) - 127).max() <= 1  # scaled, not clipped
    assert (f["f_rgb16.png"] == [0, 50, 255]).all()
    assert np.abs(f["g_gray16.tif"].astype(int) - round(4000 / 257)).max() <= 1
    assert np.abs(f["h_cmyk.jpg"].astype(int) - [255, 0, 0]).max() <= 8
    np.testing.assert_array_equal(f["i.bmp"], 77)


def test_background_option(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "t.png")
    black = MultiviewSource(tmp_path, background="black").read([0]).images()[0]
    np.testing.assert_array_equal(black, 0)
    with pytest.raises(ConfigError, match="background"):
        MultiviewSource(tmp_path, background=[1, 2])
    with pytest.raises(ConfigError, match="max_side"):
        MultiviewSource(tmp_path, max_side=-1)


def test_mixed_sizes_give_a_list_of_frames(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", sm.view_image(0, size=(40, 30)))
    _save(tmp_path / "b.png", sm.view_image(90, size=(30, 50)))
    src = MultiviewSource(tmp_path)
    info = src.info()
    assert (info.width, info.height) == (0, 0)
    batch = src.read([1, 0, 1])
    assert isinstance(batch.frames, list)
    assert [f.shape for f in batch.images()] == [(50, 30, 3), (30, 40, 3), (50, 30, 3)]
    assert src.decode_counts["full"] == 2  # a repeated view is decoded once
    assert "mixed-size" in repr(batch)
    small = src.read_small(0, 2, size=(16, 12))
    assert small.shape == (2, 12, 16, 3) and small.dtype == np.uint8


def test_huge_images_are_downscaled_with_a_reduced_jpeg_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, :, 1] = np.linspace(0, 255, 4000, dtype=np.uint8)[None]
    big[:300, :300] = 255
    _save(tmp_path / "big.jpg", big, quality=80)
    _save(tmp_path / "big.png", big)
    decoded_sizes: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: object, size: object) -> object:
        out = real_draft(self, mode, size)  # type: ignore[arg-type]
        decoded_sizes.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    src = MultiviewSource(tmp_path, max_side=500)
    info = src.info()
    assert (info.width, info.height) == (500, 375)
    batch = src.read([0, 1])
    assert [f.shape for f in batch.images()] == [(375, 500, 3), (375, 500, 3)]
    assert decoded_sizes == [(500, 375)]  # the JPEG was decoded at 1/8 scale, not 4000x3000
    for f in batch.images():
        assert _marker_corner(f) == "tl"
    full = MultiviewSource(tmp_path, max_side=0).info()
    assert (full.width, full.height) == (4000, 3000)


@pytest.mark.parametrize(
    ("fmt", "stored", "orientation", "max_side", "expected"),
    [
        ("jpg", (1920, 1080), 1, 2048, (1920, 1080)),  # fits: returned as stored
        ("jpg", (1920, 1080), 1, 1536, (960, 540)),  # 1/2-scale DCT decode, no resampling
        ("jpg", (1920, 1080), 6, 1000, (540, 960)),  # 1/2 scale, then turned upright
        ("jpg", (1920, 1080), 6, 500, (270, 480)),  # 1/4 scale
        ("png", (1001, 600), 1, 500, (334, 200)),  # reduced by 3 (box), rounded up
        ("jpg", (1700, 90), 1, 100, (100, 6)),  # more than 8x too large: 1/8, then resized
    ],
)
def test_read_size_policy_and_info_agree(
    tmp_path: Path,
    fmt: str,
    stored: tuple[int, int],
    orientation: int,
    max_side: int,
    expected: tuple[int, int],
) -> None:
    img = Image.fromarray(sm.view_image(0, size=stored))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / f"v.{fmt}", exif=exif.tobytes())
    src = MultiviewSource(tmp_path, max_side=max_side)
    info = src.info()
    assert (info.width, info.height) == expected
    frame = src.read([0]).images()[0]
    assert frame.shape == (expected[1], expected[0], 3)
    assert max(expected) <= max_side


# -- bad input --------------------------------------------------------------------------------
def _truncated_copy(src: Path, dst: Path, keep: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])


def test_corrupt_images_are_skipped_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sm.write_scene(tmp_path, [(k * 60.0, 0) for k in range(4)], fmt="jpg", transforms=False)
    _save(tmp_path / "zz_big.jpg", sm.view_image(0, size=(200, 150)), quality=95)
    _truncated_copy(tmp_path / "zz_big.jpg", tmp_path / "cut.jpg", 0.6)
    _save(tmp_path / "p.png", sm.view_image(0, size=(200, 150)))
    _truncated_copy(tmp_path / "p.png", tmp_path / "cut.png", 0.5)
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        src = MultiviewSource(tmp_path)
        info = src.info()
    assert sorted(info.extra["unreadable_images"]) == [
        "cut.jpg",
        "cut.png",
        "empty.jpg",
        "garbage.png",
    ]
    assert "cut.jpg" in caplog.text and "truncated JPEG" in caplog.text
    assert info.num_frames == 6
    assert len(src.read(list(range(6)))) == 6
    with pytest.raises(SourceError, match="fewer than min_views=7"):
        MultiviewSource(tmp_path, min_views=7).info()


def test_image_corrupt_in_the_middle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sm.write_scene(tmp_path, [(0, 0), (90, 0), (180, 0)], fmt="jpg", transforms=False)
    rng = np.random.default_rng(0)
    noise = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    _save(tmp_path / "bad.jpg", noise, quality=90)
    data = (tmp_path / "bad.jpg").read_bytes()
    half = len(data) // 2  # markers in the entropy-coded data: complete file, broken stream
    (tmp_path / "bad.jpg").write_bytes(data[:half] + b"\xff\xd8" * 25 + data[half + 50 :])
    src = MultiviewSource(tmp_path)
    assert src.info().num_frames == 4  # headers and the end marker look fine
    with pytest.raises(DecodeError) as err:
        src.read([0])
    assert str(tmp_path / "bad.jpg") in str(err.value) and "verify=decode" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        checked = MultiviewSource(tmp_path, verify="decode")
        info = checked.info()
    assert [v.name for v in info.views or ()] == ["view_000.jpg", "view_001.jpg", "view_002.jpg"]
    assert "bad.jpg" in caplog.text and info.extra["unreadable_images"] == ["bad.jpg"]
    assert checked.decode_counts == {"full": 0, "small": 0}  # verification is not a read


def test_all_images_unreadable_or_none_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SourceError) as err:
        MultiviewSource(tmp_path).info()
    assert str(tmp_path) in str(err.value) and "0 readable image(s)" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        MultiviewSource(empty).info()
    listed = tmp_path / "listed"
    listed.mkdir()
    frames = [{"file_path": "x.png", "transform_matrix": np.eye(4).tolist()}]
    (listed / "transforms.json").write_text(json.dumps({"frames": frames}))
    with pytest.raises(SourceError, match="none found on disk"):
        MultiviewSource(listed).info()


def test_sampler_overflow_on_small_scenes(tmp_path: Path) -> None:
    sm.write_scene(tmp_path, [(0, 0), (120, 0), (240, 0)])
    src = open_source(tmp_path)
    info = src.info()
    clip = whole_clip(info)
    _, nview = get_sampler("nview")
    assert nview(info, clip, n=5, source=src, overflow="all").indices == (0, 1, 2)
    assert nview(info, clip, n=5, source=src).indices == (0, 1, 2, 2, 2)
    with pytest.raises(Exception, match="fewer than n=5"):
        nview(info, clip, n=5, source=src, overflow="error")


# -- the command ------------------------------------------------------------------------------
def _records(out: Path) -> dict[str, dict[str, object]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {Path(str(r["source"])).name: r for r in map(json.loads, lines)}


def test_sample_command_on_scenes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # views clustered on one side in name order, a few around the rest
    angles = [(a, 10.0) for a in np.linspace(0, 40, 10)] + [(a, 10.0) for a in (100, 180, 260)]
    poses = sm.write_scene(data / "scene", angles)
    bad = data / "bad_json"
    sm.write_scene(bad, [(0, 0), (90, 0)])
    (bad / "transforms.json").write_text('{"frames": [ {"file_path": "view_000.png",')
    (data / "broken").mkdir()
    (data / "broken" / "a.png").write_bytes(b"nope")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["sample", str(data), "-n", "4", "--sampler", "nview", "-o", str(out)]
    )
    assert result.exit_code == 1, result.output
    recs = _records(out)
    ok = recs["scene"]
    assert ok["status"] == "ok" and ok["kind"] == "multiview"
    idx = ok["indices"]
    assert isinstance(idx, list) and len(idx) == 4
    views = ok["views"]
    assert isinstance(views, list)
    assert [v["name"] for v in views] == [f"view_{i:03d}.png" for i in idx]
    for v, i in zip(views, idx):
        np.testing.assert_allclose(np.array(v["pose_c2w"]), poses[i], atol=1e-9)
    sel = ok["selection"]
    assert isinstance(sel, dict) and sel["method"] == "poses"
    assert 0 < sel["coverage_radius_deg"] < 60
    assert sum(i >= 10 for i in idx) == 3  # all three lone views, one from the cluster
    assert len(ok["frames"]) == 4  # type: ignore[arg-type]
    err = str(recs["bad_json"]["error"])
    assert recs["bad_json"]["status"] == "failed"
    assert str(bad / "transforms.json") in err and "not valid JSON" in err
    assert recs["broken"]["status"] == "failed" and "0 readable image(s)" in str(
        recs["broken"]["error"]
    )


def test_sample_command_forced_kind_and_uniform(tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    sm.write_scene(scene, [(k * 36.0, 0) for k in range(10)], fmt="jpg", transforms=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["sample", str(scene), "-n", "3", "--kind", "multiview", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    rec = _records(out)["scene"]
    assert rec["indices"] == [1, 5, 8]
    assert [v["name"] for v in rec["views"]] == ["view_001.jpg", "view_005.jpg", "view_008.jpg"]  # type: ignore[union-attr]
    assert all(v["pose_c2w"] is None for v in rec["views"])  # type: ignore[union-attr]


def test_sample_command_empty_folder_and_too_few_views(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    small = tmp_path / "small"
    sm.write_scene(small, [(0, 0), (180, 0)])
    out = tmp_path / "out"
    args = ["sample", str(empty), str(small), "-n", "3", "--sampler", "nview"]
    result = CliRunner().invoke(cli, [*args, "--overflow", "error", "-o", str(out)])
    assert result.exit_code == 1, result.output
    recs = _records(out)
    assert recs["empty"]["status"] == "failed"
    assert "folder holds no video, image scene or 3D model" in str(recs["empty"]["error"])
    assert recs["small"]["status"] == "failed"
    assert "fewer than n=3" in str(recs["small"]["error"]) and str(small) in str(
        recs["small"]["error"]
    )
    out2 = tmp_path / "out2"
    result = CliRunner().invoke(cli, [args[0], *args[2:], "--overflow", "all", "-o", str(out2)])
    assert result.exit_code == 0, result.output
    assert _records(out2)["small"]["indices"] == [0, 1]


def test_view_indices_that_are_not_integers_are_refused(tmp_path: Path) -> None:
    """As for videos: view 1.5 is a TypeError naming it, not view 1."""
    sm.write_scene(tmp_path, [(0, 0), (90, 0), (180, 0)], transforms=False)
    src = MultiviewSource(tmp_path)
    with pytest.raises(TypeError, match=r"frame indices must be integers, got 1.5 \(float\)"):
        src.read([0, 1.5])  # type: ignore[list-item]
    assert src.read([np.int64(2)]).indices == (2,)
