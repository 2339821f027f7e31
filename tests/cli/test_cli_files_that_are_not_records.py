"""Files that are not records files, met by ``merge``, ``report`` and a resume: a file name
whose suffix says the other format is refused before anything is read (exit status 2); a
file that is not JSON lines at all (a Parquet file named .jsonl, a video) is one line
naming it (exit status 1), nothing written; a line of a records file that is not UTF-8 text
is skipped with one warning naming the file and the line, its records kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.output import read_records


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return engine_plugins.make_video(tmp_path_factory.mktemp("not-records") / "v.mp4", 6)


def _sample(video: Path, out: Path) -> Any:
    args = ["sample", str(video), "-n", "2", "--workers", "0", "--no-sheet", "-o", str(out)]
    return CliRunner().invoke(cli, args)


@pytest.fixture
def sampled(video: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    res = _sample(video, out)
    assert res.exit_code == 0, res.output
    return out


def _one_error_line(res: Any, code: int, line: str) -> None:
    assert res.exit_code == code, res.output
    assert res.output.strip().splitlines() == [f"Error: {line}"], res.output
    assert "Traceback" not in res.output


def test_merge_refuses_a_file_name_of_the_other_format_as_caption_does(
    sampled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "y.jsonl"
    res = CliRunner().invoke(cli, ["merge", str(sampled), "-o", str(out), "--format", "parquet"])
    _one_error_line(res, 2, f"{out}: a jsonl file name for parquet output")
    assert not out.exists()
    out.write_text('{"key": "k1", "status": "ok"}\n')  # an output from before: kept
    res = CliRunner().invoke(cli, ["merge", str(sampled), "-o", str(out), "--format", "parquet"])
    assert res.exit_code == 2, res.output
    assert out.read_text() == '{"key": "k1", "status": "ok"}\n'


@pytest.mark.parametrize("command", ["merge", "report"])
def test_a_parquet_file_named_jsonl_is_one_line_naming_it(
    sampled: Path, tmp_path: Path, command: str
) -> None:
    parquet = tmp_path / "y.parquet"
    res = CliRunner().invoke(cli, ["merge", str(sampled), "-o", str(parquet)])
    assert res.exit_code == 0, res.output
    named_jsonl = parquet.rename(tmp_path / "y.jsonl")
    out = tmp_path / ("z.jsonl" if command == "merge" else "r.html")
    res = CliRunner().invoke(cli, [command, str(named_jsonl), "-o", str(out)])
    _one_error_line(res, 1, f"{named_jsonl}: a Parquet file, not JSON lines (name it .parquet)")
    assert not out.exists()


@pytest.mark.parametrize("command", ["merge", "report"])
def test_a_video_given_as_records_is_one_line_naming_it(
    video: Path, tmp_path: Path, command: str
) -> None:
    out = tmp_path / ("m.jsonl" if command == "merge" else "r.html")
    res = CliRunner().invoke(cli, [command, str(video), "-o", str(out)])
    _one_error_line(res, 1, f"{video}: not a JSON-lines records file (line 1 is not UTF-8 text)")
    assert not out.exists()


@pytest.mark.parametrize("command", ["merge", "report"])
def test_an_html_page_given_as_records_is_one_line_naming_it_and_left_as_it_is(
    sampled: Path, command: str
) -> None:
    res = CliRunner().invoke(cli, ["report", str(sampled)])
    assert res.exit_code == 0, res.output
    page = sampled / "report.html"  # a report given as the records: read, then written over
    before = page.read_bytes()
    args = [command, str(page)] + (["-o", str(sampled / "m.jsonl")] if command == "merge" else [])
    res = CliRunner().invoke(cli, args)
    _one_error_line(res, 1, f"{page}: an HTML page, not a JSON-lines records file")
    assert page.read_bytes() == before and not (sampled / "m.jsonl").exists()


@pytest.mark.parametrize("name", ["notes.csv", "notes.jsonl", "video.mp4"])
def test_merge_never_replaces_a_file_that_holds_no_records(
    sampled: Path, video: Path, tmp_path: Path, name: str
) -> None:
    """-o naming a CSV, notes or a video (a slip of the shell) is refused and left as it
    is, as a run refuses to append to it and report to replace it; records merge over
    records (an earlier output) as before."""
    out = tmp_path / name
    if name == "video.mp4":
        out.write_bytes(video.read_bytes())
        why = "line 1 is not UTF-8 text"
    else:
        out.write_text("a,b\n1,2\n")
        why = "line 1 is not a record"
    before = out.read_bytes()
    res = CliRunner().invoke(cli, ["merge", str(sampled), "-o", str(out)])
    _one_error_line(res, 1, f"{out}: not a JSON-lines records file ({why}); not replaced")
    assert out.read_bytes() == before
    records = tmp_path / "m.jsonl"
    for _ in range(2):  # into a new file, then over the records it wrote
        res = CliRunner().invoke(cli, ["merge", str(sampled), "-o", str(records)])
        assert res.exit_code == 0, res.output
        assert len(list(read_records(records))) == 1


def test_a_resume_skips_a_line_that_is_not_utf8_with_one_warning(
    video: Path, sampled: Path
) -> None:
    manifest = sampled / "manifest.jsonl"
    before = manifest.read_bytes()
    with open(manifest, "ab") as fh:
        fh.write(b"\xff\xff\n")
    res = _sample(video, sampled)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    n = before.count(b"\n") + 1
    assert warned == [f"warning: {manifest}:{n}: skipping an unreadable line (not UTF-8 text)"]
    assert "1 already done" in res.stderr
    assert manifest.read_bytes().startswith(before)  # its records kept
    assert len(list(read_records(manifest, warn=False))) == 1
    # and what reads it next says the same, once
    res = CliRunner().invoke(cli, ["report", str(sampled)])
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")] == warned


def test_a_folder_without_records_given_to_merge_or_report_is_one_line_naming_it(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("not records\n")
    for args in (["merge", str(folder), "-o", str(tmp_path / "m.jsonl")],
                 ["report", str(folder), "-o", str(tmp_path / "r.html")]):  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        line = f"Error: {folder}: no records file in the folder"
        assert result.output.startswith(line) and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "m.jsonl").exists() and not (tmp_path / "r.html").exists()
