"""An image file a user names is an image: a scene of one view (the multi-view kind), not a
one-frame video with a made-up frame rate; an image met in a folder walk beside videos is
still skipped with a note, and an animated GIF named directly is still a video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scene_media as sm
from click.testing import CliRunner
from media import ffmpeg
from PIL import Image

from framepipe.cli import cli
from framepipe.discovery import discover
from framepipe.errors import SourceError
from framepipe.sources.base import open_source


@pytest.mark.parametrize("name", ["photo.jpg", "photo.JPEG", "p.png", "p.webp", "p.bmp", "p.tiff"])
def test_an_image_named_directly_is_a_one_view_scene(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    Image.fromarray(sm.view_image(0)).save(
        path, format=Image.registered_extensions()[path.suffix.lower()]
    )
    ((item,), skipped) = discover([path])
    assert (item.kind, item.error, skipped) == ("multiview", None, [])
    src = open_source(path)
    info = src.info()
    assert (info.kind, info.num_frames, info.fps, info.duration_s) == ("multiview", 1, None, None)
    assert [v.name for v in info.views or ()] == [name]
    batch = src.read([0])
    assert batch.indices == (0,) and batch.timestamps_s is None
    assert np.asarray(batch.frames).shape == (1, sm.H, sm.W, 3)


def test_sampling_an_image_named_directly_records_one_view(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.fromarray(sm.view_image(0)).save(photo)
    out = tmp_path / "out"
    args = ["sample", str(photo), "-n", "4", "--overflow", "all", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (rec,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert (rec["kind"], rec["indices"], rec["timestamps_s"]) == ("multiview", [0], None)
    assert rec["clip"]["start_s"] is None and rec["clip"]["end_s"] is None
    assert [v["name"] for v in rec["views"]] == ["photo.jpg"]


def test_an_image_in_a_folder_beside_a_video_is_still_skipped(tmp_path: Path) -> None:
    Image.fromarray(sm.view_image(0)).save(tmp_path / "poster.jpg")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.2", str(tmp_path / "clip.mp4"))
    inputs, skipped = discover([tmp_path])
    assert [(i.path.name, i.kind) for i in inputs] == [("clip.mp4", "video")]
    assert [(s.path.name, s.reason) for s in skipped] == [
        ("poster.jpg", "not a video, image scene or 3D model")
    ]


def test_an_image_named_beside_its_folder_is_an_input_and_not_noted_as_skipped(
    tmp_path: Path,
) -> None:
    """Whichever comes first, the image is one input and no note says it was skipped."""
    poster = tmp_path / "poster.jpg"
    Image.fromarray(sm.view_image(0)).save(poster)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.2", str(tmp_path / "clip.mp4"))
    for order in ([tmp_path, poster], [poster, tmp_path]):
        inputs, skipped = discover(order)
        assert sorted((i.path.name, i.kind) for i in inputs) == [
            ("clip.mp4", "video"),
            ("poster.jpg", "multiview"),
        ]
        assert skipped == []


def test_an_animated_gif_named_directly_stays_a_video(tmp_path: Path) -> None:
    gif = tmp_path / "anim.gif"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:d=1:r=10", str(gif))
    ((item,), _) = discover([gif])
    assert item.kind == "video"
    assert open_source(gif).info().num_frames == 10


def test_a_broken_image_named_directly_fails_with_its_own_error(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.fromarray(sm.view_image(0)).save(photo)
    photo.write_bytes(photo.read_bytes()[:100])
    with pytest.raises(SourceError, match="cannot read image header") as info:
        open_source(photo).info()
    assert str(info.value).startswith(str(photo))


def test_a_missing_image_named_directly_fails_as_a_missing_image(tmp_path: Path) -> None:
    """Its record is of the image's kind, and its error says the file is not there (not
    that it is "not a folder")."""
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "gone.jpg"), "-o", str(out)])
    assert result.exit_code == 1, result.output
    (rec,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert (rec["kind"], rec["status"]) == ("multiview", "failed")
    assert rec["error"] == f"{tmp_path / 'gone.jpg'}: no such file"
    with pytest.raises(SourceError, match=r"no such folder$"):
        open_source(tmp_path / "gone_scene", kind="multiview").info()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_an_image_named_without_an_image_extension_is_a_one_view_scene(
    tmp_path: Path, fmt: str
) -> None:
    """Told by its first bytes (a content-addressed store's ``3f9a...``), as a video without
    an extension is: not a one-frame video with a made-up frame rate. In a folder walk
    such a file stays unclaimed."""
    path = tmp_path / "3f9a0c"
    Image.fromarray(sm.view_image(0)).save(path, format=fmt)
    ((item,), _) = discover([path])
    assert (item.kind, item.error) == ("multiview", None)
    info = open_source(path).info()
    assert (info.kind, info.num_frames, info.fps) == ("multiview", 1, None)
    assert [v.name for v in info.views or ()] == ["3f9a0c"]
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.2", str(tmp_path / "clip.mp4"))
    inputs, skipped = discover([tmp_path])
    assert [i.path.name for i in inputs] == ["clip.mp4"]
    assert [s.path.name for s in skipped] == ["3f9a0c"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_an_image_read_as_a_video_fails_as_an_image_not_a_video(tmp_path: Path, fmt: str) -> None:
    """``framepipe shots photo.jpg`` and ``sample --kind video``: one line naming the file
    and what it is (not "no decodable video frames"), and the other inputs go on."""
    photo, blob = tmp_path / f"photo.{fmt.lower()}", tmp_path / "3f9a0c"
    for path in (photo, blob):
        Image.fromarray(sm.view_image(0)).save(path, format=fmt)
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:d=0.2", str(clip))
    result = CliRunner().invoke(cli, ["shots", str(photo), str(blob), str(clip)])
    assert result.exit_code == 1, result.output
    assert f"error: {photo}: an image, not a video\n" in result.output
    assert f"error: {blob}: an image, not a video\n" in result.output
    assert f"{clip}: 1 shot(s)" in result.output
    out = tmp_path / "out"
    args = ["sample", "--kind", "video", str(photo), str(clip), "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["source"]: (r["status"], r["error"]) for r in recs} == {
        str(photo): ("failed", f"{photo}: an image, not a video"),
        str(clip): ("ok", None),
    }
    with pytest.raises(SourceError, match=r"an image, not a video$"):
        open_source(photo, kind="video").info()
