"""Multi-view scenes as datasets ship them: a view lost to a bad file is named on the
scene's records (not only in a warning that scrolls past)."""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path

import pytest
import scene_media as sm
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.discovery import discover
from framepipe.output import read_records
from framepipe.runs.sample import MANIFEST
from framepipe.sources.multiview.source import MultiviewSource


def test_a_scenes_records_name_the_views_it_skipped(tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    names = [f"images/v{k}.jpg" for k in range(6)]
    sm.write_scene(scene, [(k * 60.0, 0) for k in range(6)], names=names, fmt="jpg")
    data = (scene / "images/v3.jpg").read_bytes()
    (scene / "images/v3.jpg").write_bytes(data[: len(data) // 2])  # a truncated copy
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"].append({**meta["frames"][0], "file_path": "images/gone.jpg"})
    (scene / "transforms.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sample", str(scene), "-n", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    (rec,) = read_records(out / MANIFEST)
    assert rec["status"] == "ok" and len(rec["views"]) == 4
    assert list(rec["multiview"]["skipped_views"]) == ["images/v3.jpg"]
    assert "truncated" in rec["multiview"]["skipped_views"]["images/v3.jpg"].lower()
    assert rec["multiview"]["missing_files"] == ["images/gone.jpg"]


def test_a_view_is_named_by_its_file_however_the_pose_file_spells_the_way(tmp_path: Path) -> None:
    names = [f"images/f{k}.jpg" for k in range(3)]
    spelt = ["./images/f0", "images\\f1.jpg", "./images/../images/f2"]
    sm.write_scene(tmp_path, [(0, 0), (90, 0), (180, 0)], names=names, file_paths=spelt)
    info = MultiviewSource(tmp_path).info()
    assert [v.name for v in info.views or ()] == names
    assert info.extra["views_with_pose"] == 3


def test_downscaled_copies_beside_images_are_no_scenes_of_their_own(tmp_path: Path) -> None:
    for scene in ("garden", "room"):  # a dataset root, scenes without poses
        for folder, size in (("images", (64, 48)), ("images_2", (32, 24)), ("images_4", (16, 12))):
            names = [f"{folder}/DSC{k:04d}.JPG" for k in range(3)]
            angles = [(k * 90.0, 0) for k in range(3)]
            sm.write_scene(tmp_path / scene, angles, names=names, transforms=False, size=size)
    inputs, skipped = discover(tmp_path)
    assert [i.path for i in inputs] == [tmp_path / "garden/images", tmp_path / "room/images"]
    assert {s.path.relative_to(tmp_path).as_posix() for s in skipped} == {
        "garden/images_2",
        "garden/images_4",
        "room/images_2",
        "room/images_4",
    }
    assert all("downscaled copy" in s.reason for s in skipped)
    # named explicitly, a copy is read as asked
    (one,), _ = discover(tmp_path / "room/images_2")
    assert one.kind == "multiview" and one.error is None


def test_heic_photos_in_a_scene_are_named_as_skipped_not_dropped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["IMG_0001.JPG", "IMG_0002.JPG"]
    sm.write_scene(tmp_path, [(0, 0), (90, 0)], names=names, transforms=False)
    (tmp_path / "IMG_0003.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        info = MultiviewSource(tmp_path).info()
    assert [v.name for v in info.views or ()] == names
    assert info.extra["record"]["skipped_views"] == {
        "IMG_0003.HEIC": "HEIC/HEIF images cannot be read here (no decoder): convert them to JPEG"
    }
    (line,) = [r.getMessage() for r in caplog.records]
    assert "IMG_0003.HEIC" in line and "convert them to JPEG" in line


def test_views_keep_their_order_whichever_unicode_form_the_names_are_in(tmp_path: Path) -> None:
    orders = []
    for form in ("NFC", "NFD"):  # Linux keeps names as written; macOS HFS+ writes NFD
        names = [unicodedata.normalize(form, n) for n in ("e_3.jpg", "f.jpg", "é_2.jpg")]
        sm.write_scene(tmp_path / form, [(0, 0), (90, 0), (180, 0)], names=names, transforms=False)
        info = MultiviewSource(tmp_path / form).info()
        orders.append([unicodedata.normalize("NFC", v.name) for v in info.views or ()])
    assert orders[0] == orders[1] == ["e_3.jpg", "f.jpg", "é_2.jpg"]
