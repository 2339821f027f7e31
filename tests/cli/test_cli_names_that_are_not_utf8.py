"""File names that are not UTF-8 (any bytes are a name on Linux) are shown on the terminal the
one way the HTML report shows them, ``bad\\xff.mp4``, in every line a command prints: its
errors, its notes and its end summary; ``--json`` keeps them as the records do
(``\\udcff`` escapes, which ``os.fsencode`` turns back into the name's bytes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import engine_plugins
from click.testing import CliRunner

from framepipe.cli import cli


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    engine_plugins.make_video(Path(os.fsdecode(bytes(d) + b"/bad\xff.mp4")), 6)
    Path(os.fsdecode(bytes(d) + b"/broken\xfe.mp4")).write_bytes(b"not a video")
    return d


def test_caption_shows_names_that_are_not_utf8_as_bytes_in_its_errors_and_summary(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The end summary of ``framepipe caption -o out\\xff.jsonl`` said ``out\\udcff.jsonl``
    (and the error line ``broken\\udcfe.mp4``): Python's escape of the byte, not the byte."""
    out = os.fsdecode(bytes(tmp_path) + b"/out\xff.jsonl")
    args = ["caption", str(_folder(tmp_path)), "-n", "2", "--model", str(tiny_model_dir)]
    args += ["--max-new-tokens", "2", "--dtype", "float32", "--workers", "0", "-o", out]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output  # the broken file failed, the other was answered
    assert "error: " in res.stderr and "broken\\xfe.mp4: not a readable video" in res.stderr
    assert "1 clip(s) answered, 0 already done, 1 failed -> " in res.stderr
    assert "out\\xff.jsonl in " in res.stderr
    assert "\\udc" not in res.stderr


def test_info_shows_names_that_are_not_utf8_as_bytes_and_its_json_as_the_records_do(
    tmp_path: Path,
) -> None:
    folder = _folder(tmp_path)
    res = CliRunner().invoke(cli, ["info", str(folder)])
    assert res.exit_code == 1
    assert "bad\\xff.mp4  video" in res.stdout and "broken\\xfe.mp4: not a" in res.stderr
    res = CliRunner().invoke(cli, ["info", "--json", str(folder)])
    rows = json.loads(res.stdout)
    names = [os.path.basename(os.fsencode(r["source"])) for r in rows]
    assert names == [b"bad\xff.mp4", b"broken\xfe.mp4"]
