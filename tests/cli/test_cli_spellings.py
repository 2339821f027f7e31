"""One spelling per meaning on the command line: ``-o/--output`` on every command that writes,
``--format jsonl|parquet`` for records (the image format is ``--image-format``), no short
option that means two things, and the old spellings still taken, with a note, for one
release."""

from __future__ import annotations

import json
from pathlib import Path

import click
import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.cli.common import OldSpelling


def _commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    group = cli
    assert isinstance(group, click.Group)
    return {n: c for n in group.list_commands(ctx) if (c := group.get_command(ctx, n))}


def _help(*args: str) -> str:
    return " ".join(CliRunner().invoke(cli, [*args, "--help"], terminal_width=300).output.split())


@pytest.mark.parametrize("name", ["sample", "caption", "report", "merge"])
def test_every_command_that_writes_takes_dash_o_output(name: str) -> None:
    assert "-o, --output" in _help(name)
    assert "--out " not in _help(name)  # the old spelling is hidden


@pytest.mark.parametrize("name", ["sample", "caption", "merge"])
def test_format_means_the_records_format_everywhere(name: str) -> None:
    assert "--format [jsonl|parquet]" in _help(name)
    assert "--manifest-format" not in _help(name)


def test_the_image_format_has_a_name_of_its_own() -> None:
    assert "--image-format [jpg|png]" in _help("sample")


def test_no_short_option_means_two_things() -> None:
    meanings: dict[str, set[str]] = {}
    for cmd in [cli, *_commands().values()]:
        for p in cmd.params:
            if not isinstance(p, click.Option) or isinstance(p, OldSpelling):
                continue
            longest = max(p.opts, key=len)
            for o in p.opts:
                if len(o) == 2 and o.startswith("-"):
                    meanings.setdefault(o, set()).add(longest)
    assert meanings and all(len(m) == 1 for m in meanings.values()), meanings
    assert meanings["-o"] == {"--output"} and meanings["-q"] == {"--question"}


def test_caption_asks_for_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["caption", "clip.mp4", "-q", "What?"])
    assert res.exit_code == 2 and "Missing option '-o' / '--output'" in res.output
    assert not (tmp_path / "results.jsonl").exists()  # never written silently


def test_the_old_spellings_still_work_with_a_note(tmp_path: Path) -> None:
    video = engine_plugins.make_video(tmp_path / "v.mp4", 6)
    out = tmp_path / "out"
    args = ["sample", str(video), "-n", "2", "--workers", "0", "--no-sheet"]
    res = CliRunner().invoke(
        cli, [*args, "--out", str(out), "--format", "png", "--manifest-format", "jsonl"]
    )
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.stderr.splitlines() if "deprecated" in ln]
    assert len(notes) == 3 and all(n.startswith("warning: ") for n in notes), notes
    assert any("--out is deprecated" in n and "use -o/--output" in n for n in notes)
    assert any("--format png is deprecated" in n and "--image-format png" in n for n in notes)
    assert any("--manifest-format is deprecated" in n and "use --format" in n for n in notes)
    (rec,) = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    assert rec["status"] == "ok" and all(f.endswith(".png") for f in rec["frames"])

    html = tmp_path / "page.html"
    res = CliRunner().invoke(cli, ["report", str(out), "--out", str(html)])
    assert res.exit_code == 0 and html.is_file() and "--out is deprecated" in res.stderr
    res = CliRunner().invoke(cli, ["-q", "info", str(video)])
    assert res.exit_code == 0 and "-q is deprecated" in res.stderr and "use --quiet" in res.stderr


def test_an_old_spelling_of_a_required_option_counts(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["sample", str(tmp_path)])
    assert res.exit_code == 2 and "Missing option '-o' / '--output'" in res.output


BOTH = [
    (["--out", "A", "-o", "B"], "--out and -o/--output"),
    (["-o", "B", "--manifest-format", "parquet", "--format", "jsonl"],
     "--manifest-format and --format"),
    (["-o", "B", "--format", "png", "--image-format", "jpg"], "--format png and --image-format"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "names"), BOTH, ids=[" ".join(a) for a, _ in BOTH])
def test_an_old_spelling_given_with_its_new_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], names: str
) -> None:
    """Which of the two was meant is a guess: neither wins, the command stops before any
    work (exit 2, one line naming both)."""
    monkeypatch.chdir(tmp_path)
    video = engine_plugins.make_video(tmp_path / "v.mp4", 6)
    res = CliRunner().invoke(cli, ["sample", str(video), "-n", "2", "--workers", "0", *args])
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert names in line and "given twice" in line, line
    assert "deprecated" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # nothing written


def test_the_old_quiet_flag_given_with_the_new_one_is_refused() -> None:
    res = CliRunner().invoke(cli, ["-q", "--quiet", "info", "nowhere"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "Error: -q and --quiet are the same option, given twice: give --quiet only"
    ]
