"""Each thing is said once: a path skipped while inputs are found is one line, with or
without -v; a merge of inputs that hold no record at all is an error naming them."""

from __future__ import annotations

from pathlib import Path

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "-v"])
def test_a_skipped_path_is_said_once(tmp_path: Path, verbose: list[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    engine_plugins.make_video(folder / "v.mp4", 6)
    (folder / "notes.txt").write_text("not a video\n")
    args = ["sample", str(folder), "-n", "2", "--workers", "0", "--no-sheet"]
    res = CliRunner().invoke(cli, [*verbose, *args, "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    said = [ln for ln in res.stderr.splitlines() if "notes.txt" in ln]
    assert len(said) == 1 and "skipping" in said[0], res.stderr


def test_a_merge_of_inputs_without_any_record_is_an_error_naming_them(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\nworld\n")
    out = tmp_path / "m.jsonl"
    out.write_text('{"key": "k1", "status": "ok"}\n')  # an output from before: kept
    res = CliRunner().invoke(cli, ["merge", str(notes), "-o", str(out)])
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: ")]
    assert errors == [f"Error: {notes}: no record to merge"]
    assert "record(s) from" not in res.stderr  # no summary as if it had worked
    assert out.read_text() == '{"key": "k1", "status": "ok"}\n'
    unreadable = [ln for ln in res.stderr.splitlines() if "unreadable line" in ln]
    assert len(unreadable) == 2  # each of its two lines once
