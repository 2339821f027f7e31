from pathlib import Path

from framepipe.discover import discover


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


def test_sniffs_video_without_extension(tmp_path: Path) -> None:
    f = tmp_path / "video_noext"
    f.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 20)
    sub = tmp_path / "d"
    sub.mkdir()
    (sub / "video_noext").write_bytes(f.read_bytes())
    inputs, _ = discover([sub])
    assert [(i.path.name, i.kind) for i in inputs] == [("video_noext", "video")]
