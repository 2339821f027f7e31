"""``framepipe --quiet``: only errors on stderr, on every command. Notes (a skipped file),
warnings, summaries and progress bars are left out; a command's output on stdout (a table,
JSON) stays. Notes go through the logger whose level ``--quiet`` sets (one switch)."""

from __future__ import annotations

import io
import logging
import types
from pathlib import Path

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.cli.common import setup_logging
from framepipe.cli.progress import Progress


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video and a file that is skipped with a note."""
    d = tmp_path_factory.mktemp("quiet")
    engine_plugins.make_video(d / "v.mp4", 6)
    (d / "readme.txt").write_text("not an input")
    return d


def test_sample_quiet_prints_nothing_but_errors(folder: Path, tmp_path: Path) -> None:
    loud = CliRunner().invoke(cli, ["sample", str(folder), "-n", "2", "-o", str(tmp_path / "a")])
    assert loud.exit_code == 0, loud.output
    assert "note: skipping" in loud.stderr and "1 clip(s) written" in loud.stderr
    out = tmp_path / "b"
    res = CliRunner().invoke(cli, ["--quiet", "sample", str(folder), "-n", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stderr == "" and res.stdout == ""
    assert (out / "manifest.jsonl").exists()


def test_sample_quiet_still_prints_errors(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"not a video")
    (bad / "readme.txt").write_text("skipped")
    res = CliRunner().invoke(
        cli, ["--quiet", "sample", str(bad), "-n", "2", "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.mp4" in lines[0]


def test_shots_and_info_quiet_keep_their_output(folder: Path) -> None:
    for command in ("shots", "info"):
        res = CliRunner().invoke(cli, ["--quiet", command, str(folder)])
        assert res.exit_code == 0, res.output
        assert res.stderr == "" and "v.mp4" in res.stdout


def test_report_and_merge_quiet(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert (
        CliRunner().invoke(cli, ["--quiet", "sample", str(folder), "-o", str(out)]).exit_code == 0
    )
    for command, name in (("report", "r.html"), ("merge", "m.jsonl")):
        loud = CliRunner().invoke(cli, [command, str(out), "-o", str(tmp_path / f"loud-{name}")])
        assert loud.exit_code == 0 and loud.stderr, loud.output  # a summary line
        res = CliRunner().invoke(cli, ["--quiet", command, str(out), "-o", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        assert res.stderr == "" and res.stdout == ""
        assert (tmp_path / name).exists()


def test_caption_quiet(folder: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    args = ["--quiet", "caption", str(folder), "-n", "2", "--model", str(tiny_model_dir)]
    args += ["--max-new-tokens", "2", "--dtype", "float32", "-o", str(tmp_path / "r.jsonl")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert res.stderr == ""  # no skip note, summary or random-weights note


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_turns_the_progress_bar_off(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    record = types.SimpleNamespace(status="ok")
    try:
        for level, shown in ((logging.WARNING, True), (logging.ERROR, False)):
            setup_logging(level)
            progress = Progress("sample", whole=True)
            progress.on_input([], [])
            progress.on_record(record)  # type: ignore[arg-type]
            assert (not progress.bar.disable) is shown
            progress.close()
    finally:
        setup_logging(logging.WARNING)
