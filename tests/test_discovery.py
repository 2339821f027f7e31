import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from framepipe.discovery import discover
from framepipe.errors import UnsupportedInputError
from framepipe.output import JsonlWriter, read_records
from framepipe.records import failed_record
from framepipe.sources.base import guess_kind, open_source


def test_folder_walk_picks_media_and_notes_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "clip2.mp4").write_bytes(b"x")
    (tmp_path / "a" / "clip10.mp4").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("hi")
    (tmp_path / "a" / ".hidden.mp4").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    inputs, skipped = discover([tmp_path / "a", tmp_path / "empty"])
    assert [i.path.name for i in inputs if i.error is None] == ["clip2.mp4", "clip10.mp4"]
    assert [s.path.name for s in skipped] == ["notes.txt"]
    (empty,) = [i for i in inputs if i.error]
    assert empty.path.name == "empty" and "no video" in (empty.error or "")


def test_explicit_files_are_inputs_even_if_unknown(tmp_path: Path) -> None:
    f = tmp_path / "odd name é.bin"
    f.write_bytes(b"\x00" * 10)
    inputs, skipped = discover([f, tmp_path / "missing.mp4"])
    assert [i.path for i in inputs] == [f, tmp_path / "missing.mp4"]
    assert skipped == []


def test_a_missing_file_named_directly_has_the_kind_its_name_says(tmp_path: Path) -> None:
    """A photo or a mesh that is not there yet fails as what it is (the record's kind), as
    it does when it is there, and as a missing manifest row or URI of that name does."""
    names = ["photo.jpg", "mesh.obj", "clip.mp4", "noext"]
    inputs, _ = discover([tmp_path / n for n in names])
    assert [(i.path.name, i.kind) for i in inputs] == [
        ("photo.jpg", "multiview"),
        ("mesh.obj", "render"),
        ("clip.mp4", "video"),
        ("noext", "video"),
    ]


def test_sniffs_video_without_extension(tmp_path: Path) -> None:
    f = tmp_path / "video_noext"
    f.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 20)
    sub = tmp_path / "d"
    sub.mkdir()
    (sub / "video_noext").write_bytes(f.read_bytes())
    inputs, _ = discover([sub])
    assert [(i.path.name, i.kind) for i in inputs] == [("video_noext", "video")]


# -- nothing on the file system stops discovery (issue 11.5) ---------------------------------


def _rescue_fifo(fifo: Path, after_s: float = 5.0) -> None:
    """Open ``fifo`` for writing after a while, so that code blocked reading it (the bug)
    gets an end of file and the test fails instead of hanging."""

    def open_write_end() -> None:
        time.sleep(after_s)
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)

    threading.Thread(target=open_write_end, daemon=True).start()


def test_symbolic_link_loops_are_failed_inputs_or_notes(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.mp4").symlink_to("b.mp4")
    (d / "b.mp4").symlink_to("a.mp4")
    (d / "self_noext").symlink_to("self_noext")
    (d / "good.mp4").write_bytes(b"x")
    (d / "sub").mkdir()
    (d / "sub" / "up").symlink_to("..")  # a folder linking to a folder above it
    (d / "sub" / "me").symlink_to(".")  # a folder linking to itself
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop.name)
    inputs, skipped = discover([d, loop])
    by_name = {i.path.name: i for i in inputs}
    assert sorted(by_name) == ["a.mp4", "b.mp4", "good.mp4", "loop.mp4"]
    assert by_name["good.mp4"].error is None
    for name in ("a.mp4", "b.mp4", "loop.mp4"):
        err = by_name[name].error or ""
        assert err.startswith(f"{by_name[name].path}: ") and "symbolic link loop" in err
        assert "\n" not in err
    notes = {s.path.name: s.reason for s in skipped}
    assert "symbolic link loop" in notes["self_noext"]
    assert "already searched" in notes["up"] and "already searched" in notes["me"]


def test_a_folder_named_twice_or_linked_is_searched_once(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "v.mp4").write_bytes(b"x")
    (tmp_path / "link").symlink_to(d)
    inputs, skipped = discover([d, tmp_path / "link", d])
    assert [(i.path, i.error) for i in inputs] == [(d / "v.mp4", None)]
    assert [s.path for s in skipped] == [tmp_path / "link", d]


def test_fifos_sockets_and_devices_are_never_opened(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    fifo, named = d / "pipe_noext", tmp_path / "given_noext"
    os.mkfifo(fifo)
    os.mkfifo(named)
    os.mkfifo(d / "pipe.mp4")
    (d / "zero_noext").symlink_to("/dev/zero")
    zero = tmp_path / "zero.ply"
    zero.symlink_to("/dev/zero")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(d / "sock_noext"))
        for p in (fifo, named, d / "pipe.mp4"):
            _rescue_fifo(p)
        t0 = time.monotonic()
        inputs, skipped = discover([d, named, zero])
        assert time.monotonic() - t0 < 4, "discovery waited on a FIFO"
    finally:
        sock.close()
    errors = {i.path.name: i.error for i in inputs}
    assert errors == {
        "pipe.mp4": f"{d / 'pipe.mp4'}: not a regular file (FIFO)",
        "given_noext": f"{named}: not a regular file (FIFO)",
        "zero.ply": f"{zero}: not a regular file (character device)",
    }
    assert {i.path.name: i.kind for i in inputs}["zero.ply"] == "render"
    notes = {s.path.name: s.reason for s in skipped}
    assert notes == {
        "pipe_noext": "not a regular file (FIFO)",
        "sock_noext": "not a regular file (socket)",
        "zero_noext": "not a regular file (character device)",
    }
    # sniffing itself never opens a FIFO either
    _rescue_fifo(named)
    assert guess_kind(named) is None
    assert guess_kind(zero, sniff=True) == "render"  # by its extension, without opening


def test_broken_links_and_folders_named_like_files(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "gone.mp4").symlink_to("nowhere.mp4")
    (d / "gone_noext").symlink_to("nowhere")
    (d / "folder.mp4").mkdir()
    (d / "empty").mkdir()
    (d / "v.mp4").write_bytes(b"x")
    inputs, skipped = discover([d])
    assert {i.path.name: i.error for i in inputs} == {
        "gone.mp4": f"{d / 'gone.mp4'}: broken symbolic link (its target does not exist)",
        "v.mp4": None,
    }
    assert {s.path.name: s.reason for s in skipped} == {
        "folder.mp4": "a folder named like a media file, with nothing in it",
        "gone_noext": "broken symbolic link (its target does not exist)",
    }


def test_names_that_are_not_utf8_round_trip_into_records(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/\xff\xfe clip.mp4"
    with open(raw, "wb") as fh:
        fh.write(b"not a video")
    (inputs, _) = discover([tmp_path])
    (item,) = inputs
    assert os.fsencode(str(item.path)) == raw
    out = tmp_path / "records.jsonl"
    with JsonlWriter(out) as writer:
        writer.write(failed_record(str(item.path), "cannot decode", kind="video"))
        writer.write(failed_record(str(tmp_path / "é.mp4"), "cannot decode", kind="video"))
    text = out.read_bytes().decode("utf-8")  # the file is valid UTF-8
    assert "\\udcff\\udcfe clip.mp4" in text and "é.mp4" in text
    first, second = read_records(out)
    assert os.fsencode(first["source"]) == raw and first["error"].startswith(first["source"])
    assert second["source"] == str(tmp_path / "é.mp4")


def test_sources_never_open_fifos_or_devices(tmp_path: Path) -> None:
    """Inputs that do not come from discovery (a manifest row, the Python API) are checked
    where every source is opened."""
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.ply"
    zero.symlink_to("/dev/zero")
    loop = tmp_path / "loop.obj"
    loop.symlink_to(loop.name)
    _rescue_fifo(fifo)
    cases = [(fifo, "video", "FIFO"), (zero, "render", "character device"), (loop, None, "loop")]
    for path, kind, needle in cases:
        with pytest.raises(UnsupportedInputError, match=needle) as exc:
            open_source(path, kind)
        assert str(exc.value).startswith(f"{path}: ")


def test_a_scene_in_a_folder_given_to_a_video_only_command_is_one_note_not_one_a_view(
    tmp_path: Path,
) -> None:
    """``framepipe shots DATA/`` (a forced kind) walked a multi-view scene inside the folder
    file by file: one 'not a video' note for each of its views and its pose file. The scene
    is one input of another kind: one note naming it, and the videos beside it are found."""
    from media import h264_mp4
    from scene_media import write_scene

    h264_mp4(tmp_path / "data" / "a.mp4", num_frames=10)
    write_scene(tmp_path / "data" / "scene", [(a, 10.0) for a in range(0, 360, 45)])
    inputs, skipped = discover([tmp_path / "data"], kind="video")
    assert [(i.path.name, i.kind) for i in inputs] == [("a.mp4", "video")]
    assert [(s.path.name, s.reason) for s in skipped] == [("scene", "an image scene, not a video")]


def test_a_3d_model_named_for_a_video_only_command_says_what_it_is(tmp_path: Path) -> None:
    """``framepipe shots model.ply`` said 'not a readable video (Invalid data found when
    processing input)'. A file named with a forced kind whose extension says another kind
    is one failed input saying what it is, as a named image is; a scene folder is walked as
    before (its note, then 'folder holds no video')."""
    from scene_media import write_scene

    model = tmp_path / "model.ply"
    model.write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    write_scene(tmp_path / "scene", [(a, 10.0) for a in range(0, 360, 90)])
    inputs, skipped = discover([model, tmp_path / "scene"], kind="video")
    assert [(i.path.name, i.kind, i.error) for i in inputs] == [
        ("model.ply", "video", f"{model}: a 3D model, not a video"),
        ("scene", "video", f"{tmp_path / 'scene'}: folder holds no video"),
    ]
    assert [s.reason for s in skipped] == ["an image scene, not a video"]
    inputs, _ = discover([clip, model], kind="render")
    assert [i.error for i in inputs] == [f"{clip}: a video, not a 3D model", None]
