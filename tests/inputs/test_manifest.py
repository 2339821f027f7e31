"""Manifests (``--inputs-from``): txt, CSV, TSV, JSON Lines and Parquet; a manifest without a
``path`` column fails before any work; a bad row is one failed record naming its line; a
row's id, clip range and questions reach its records only."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.errors import ConfigError
from framepipe.inputs import collect_inputs, manifest_inputs
from framepipe.output import read_records
from framepipe.runs.sample import MANIFEST, sample

CFG = SampleConfig(n=2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("manifest_videos")
    engine_plugins.make_video(d / "a.mp4", 30, seed=1)  # 1 s at 30 fps
    engine_plugins.make_video(d / "b.mp4", 60, seed=2)  # 2 s
    return d


def _write(path: Path, rows: list[dict[str, Any]], fmt: str) -> Path:
    if fmt == "txt":
        lines = ["# a comment", ""] + [r["path"] for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        import csv

        cols = sorted({k for r in rows for k in r})
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, cols, delimiter="\t" if fmt == "tsv" else ",")
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl", "parquet"])
def test_each_format_lists_its_rows(videos: Path, tmp_path: Path, fmt: str) -> None:
    rows = [{"path": str(videos / "a.mp4")}, {"path": "b.mp4"}]  # relative: to the manifest
    m = _write(videos / f"list-{fmt}.{fmt}", rows, fmt)
    items = list(manifest_inputs(m))
    assert [i.path for i in items] == [videos / "a.mp4", videos / "b.mp4"]
    assert all(i.kind == "video" and i.error is None and i.uri is None for i in items)
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert (s.done, len(s.failed)) == (2, 0)
    recs = list(read_records(tmp_path / "out" / MANIFEST))
    assert sorted(r["source"] for r in recs) == [str(videos / "a.mp4"), str(videos / "b.mp4")]


def test_a_manifest_streams_to_the_engine(videos: Path, tmp_path: Path) -> None:
    m = _write(tmp_path / "l.txt", [{"path": str(videos / "a.mp4")}] * 3, "txt")
    inputs, notes = collect_inputs([], inputs_from=m)
    assert not isinstance(inputs, list) and not hasattr(inputs, "__len__") and notes == []
    seen: list[Any] = []
    s = sample(
        [], tmp_path / "o", CFG, inputs_from=m, workers=1, on_input=lambda i, n: seen.append(i)
    )
    assert not hasattr(seen[0], "__len__")  # the run was given the stream, not a list
    # three rows of the same file are three inputs with the same clip: one record (the
    # writer keeps one record per clip), counted as done once and skipped twice
    assert s.done + s.skipped >= 1 and not s.failed


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_no_path_column_is_one_error_before_any_work(tmp_path: Path, fmt: str) -> None:
    m = _write(tmp_path / f"bad.{fmt}", [{"file": "a.mp4", "id": "x"}], fmt)
    with pytest.raises(ConfigError, match=r"bad\.\w+: the manifest has no 'path' column"):
        collect_inputs([], inputs_from=m)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sample", "--inputs-from", str(m), "-o", str(out)])
    assert res.exit_code != 0
    assert "no 'path' column" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (out / MANIFEST).exists()  # nothing ran


def test_a_missing_manifest_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the manifest"):
        collect_inputs([], inputs_from=tmp_path / "nope.csv")


def test_bad_rows_are_failed_records_naming_the_line(videos: Path, tmp_path: Path) -> None:
    m = tmp_path / "rows.csv"
    m.write_text(
        "path,start_s,end_s,questions\n"
        f"{videos / 'a.mp4'},,,\n"  # line 2: fine
        ",,,\n"  # line 3: blank row: skipped
        '"",1,,\n'  # line 4: empty path
        f"{videos / 'a.mp4'},2,1,\n"  # line 5: end before start
        f"{videos / 'a.mp4'},x,,\n"  # line 6: not a number
        f'{videos / "a.mp4"},,,"[1, 2]"\n'  # line 7: questions not strings
        f"{videos / 'b.mp4'},5,,\n",  # line 8: no frame in the range
        encoding="utf-8",
    )
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert s.done == 1
    errors = [e for _, e in s.failed]  # in manifest order (one process)
    assert len(errors) == 5
    assert errors[0] == f"{m}:4: empty path"
    assert errors[1] == f"{m}:5: end_s (1) must be greater than start_s (2)"
    assert errors[2].startswith(f"{m}:6: start_s ('x') is not a number")
    assert errors[3].startswith(f"{m}:7: question 1 is empty or not a string")
    assert "no frame in the clip range 5..end s" in errors[4] and str(videos / "b.mp4") in errors[4]
    recs = list(read_records(tmp_path / "out" / MANIFEST))
    assert len(recs) == 6 and len({r["key"] for r in recs}) == 6  # one record per bad row
    assert all("\n" not in r["error"] for r in recs if r["status"] == "failed")


def test_a_jsonl_row_that_is_not_utf8_is_a_failed_record_naming_its_line(
    videos: Path, tmp_path: Path
) -> None:
    m = tmp_path / "rows.jsonl"
    row = json.dumps({"path": str(videos / "a.mp4")}).encode()
    m.write_bytes(row + b"\n\xff\xfe\n" + row.replace(b"a.mp4", b"b.mp4") + b"\n")
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert s.done == 2  # the rows around it
    assert [e for _, e in s.failed] == [f"{m}:2: not a JSON object (not UTF-8 text)"]


@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_a_listed_name_that_is_not_utf8_is_that_files_name(
    videos: Path, tmp_path: Path, fmt: str
) -> None:
    """Text and CSV lists are read as file names are: a name's bytes that are not UTF-8
    (Latin-1 here) reach the file of that name, as discovery finds it."""
    raw = os.fsencode(tmp_path) + b"/caf\xe9.mp4"
    Path(os.fsdecode(raw)).write_bytes((videos / "a.mp4").read_bytes())
    m = tmp_path / f"rows.{fmt}"
    m.write_bytes((b"path\n" if fmt == "csv" else b"") + raw + b"\n")
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert (s.done, s.failed) == (1, [])
    (rec,) = read_records(tmp_path / "out" / MANIFEST)
    assert os.fsencode(rec["source"]) == raw


@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_a_windows_1252_name_reaches_its_utf8_named_file(
    videos: Path, tmp_path: Path, fmt: str
) -> None:
    """Excel on Windows saves CSV as Windows-1252: ``café`` is the byte e9 there, while the
    file on disk is named in UTF-8. No file has the Latin-1 name, so the UTF-8 one is read."""
    (tmp_path / "café.mp4").write_bytes((videos / "a.mp4").read_bytes())
    m = tmp_path / f"rows.{fmt}"
    m.write_bytes((b"path\n" if fmt == "csv" else b"") + b"caf\xe9.mp4\n")
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert (s.done, s.failed) == (1, [])
    (rec,) = read_records(tmp_path / "out" / MANIFEST)
    assert rec["source"] == str(tmp_path / "café.mp4")


def test_row_id_and_clip_range_reach_only_their_records(videos: Path, tmp_path: Path) -> None:
    m = tmp_path / "rows.jsonl"
    rows = [
        {"path": str(videos / "b.mp4"), "id": "first", "start_s": 0.5, "end_s": 1.0},
        {"path": str(videos / "b.mp4"), "id": 7},
        {"path": str(videos / "a.mp4")},
    ]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    s = sample([], tmp_path / "out", SampleConfig(n=3), inputs_from=m, workers=0)
    assert (s.done, s.failed) == (3, [])
    recs = list(read_records(tmp_path / "out" / MANIFEST))
    by_id = {r.get("id"): r for r in recs}
    assert set(by_id) == {"first", "7", None}
    ranged, whole = by_id["first"], by_id["7"]
    # 30 fps: frames 15..29 are the ones from 0.5 s to before 1.0 s
    assert (ranged["clip"]["start_frame"], ranged["clip"]["end_frame"]) == (15, 30)
    assert ranged["clip"]["start_s"] == pytest.approx(0.5)
    assert ranged["clip"]["end_s"] == pytest.approx(1.0)
    assert all(15 <= i < 30 for i in ranged["indices"])
    assert all(0.5 - 1e-6 <= t < 1.0 for t in ranged["timestamps_s"])
    assert (whole["clip"]["start_frame"], whole["clip"]["end_frame"]) == (0, 60)
    assert ranged["key"] != whole["key"]
    assert "id" not in by_id[None]


@pytest.mark.parametrize("workers", [0, 2])
def test_one_clip_on_two_rows_under_two_ids_is_two_records_each_with_its_id(
    videos: Path, tmp_path: Path, workers: int
) -> None:
    """The same file and range on two rows with their own ids: two records, each with its
    row's id. They were one record, with the id of whichever row finished last (so it
    differed between engines and runs), and a rerun kept it whatever the ids now said."""
    m = tmp_path / "rows.csv"
    a = videos / "a.mp4"
    m.write_text(f"path,id,start_s,end_s\n{a},r1,0,0.5\n{a},r3,0,0.5\n{a},r1,0,0.5\n")
    out = tmp_path / "out"
    s = sample([], out, SampleConfig(n=2), inputs_from=m, workers=workers)
    assert s.failed == []
    recs = list(read_records(out / MANIFEST))
    assert sorted(r["id"] for r in recs) == ["r1", "r3"]
    assert recs[0]["indices"] == recs[1]["indices"] and recs[0]["key"] != recs[1]["key"]
    again = sample([], out, SampleConfig(n=2), inputs_from=m, workers=workers)
    assert (again.done, again.skipped) == (0, 2)  # the repeated r1 row is one input
    m.write_text(f"path,id,start_s,end_s\n{a},r2,0,0.5\n")  # a row's id renamed: its record
    renamed = sample([], out, SampleConfig(n=2), inputs_from=m, workers=workers)
    assert renamed.done == 1
    assert sorted(r["id"] for r in read_records(out / MANIFEST)) == ["r1", "r2", "r3"]


def test_a_missing_file_is_named_with_its_row_and_where_relative_paths_start(
    videos: Path, tmp_path: Path
) -> None:
    """A row naming a file that is not there said only ``lists/a.mp4: no such file``: a
    user who wrote the path relative to the current folder could not tell why."""
    lists = tmp_path / "lists"
    lists.mkdir()
    m = lists / "m.txt"
    m.write_text(f"{videos / 'a.mp4'}\na.mp4\n{tmp_path / 'gone.mp4'}\n")
    s = sample([], tmp_path / "out", SampleConfig(n=2), inputs_from=m, workers=0)
    assert s.done == 1
    assert {error for _, error in s.failed} == {
        f"{lists / 'a.mp4'}: no such file (listed at {m}:2, from {lists}/)",
        f"{tmp_path / 'gone.mp4'}: no such file (listed at {m}:3)",
    }


def test_windows_are_cut_to_the_range(videos: Path) -> None:
    from framepipe.read_clips import read_clips

    cfg = SampleConfig(n=2, clip_seconds=0.5)
    item = Input(videos / "b.mp4", "video", start_s=0.7, end_s=1.6)
    clips = [j.record().clip for j in read_clips(item, cfg, read_frames=False)]
    assert clips is not None
    spans = [(c["start_frame"], c["end_frame"]) for c in clips if c]
    assert spans == [(21, 30), (30, 45), (45, 48)]  # windows 0.5-1.0, 1.0-1.5, 1.5-2.0 cut
    assert all(c and c["label"] == "window" for c in clips)


def test_a_range_on_a_scene_is_a_failed_record(tmp_path: Path) -> None:
    import scene_media

    scene = tmp_path / "scene"
    scene_media.write_scene(scene, [(a, 0.0) for a in (0, 90, 180, 270)])
    m = tmp_path / "l.jsonl"
    m.write_text(json.dumps({"path": str(scene), "start_s": 1}) + "\n", encoding="utf-8")
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert len(s.failed) == 1 and "applies to videos" in s.failed[0][1]


def test_inputs_given_as_objects_and_iterators(videos: Path, tmp_path: Path) -> None:
    items = iter([Input(videos / "a.mp4", "video", id="obj"), str(videos / "b.mp4")])
    s = sample(items, tmp_path / "out", CFG, workers=0)  # type: ignore[arg-type]
    assert (s.done, s.failed) == (2, [])
    ids = sorted(str(r.get("id")) for r in read_records(tmp_path / "out" / MANIFEST))
    assert ids == ["None", "obj"]


def test_the_cli_needs_paths_or_a_manifest(tmp_path: Path) -> None:
    for cmd in (
        ["sample", "-o", str(tmp_path / "o")],
        ["caption", "-o", str(tmp_path / "r.jsonl")],
    ):
        res = CliRunner().invoke(cli, cmd)
        assert res.exit_code == 2 and "give PATHS, --inputs-from FILE, or both" in res.output


def test_the_cli_bar_has_no_total_for_a_manifest(videos: Path, tmp_path: Path) -> None:
    m = _write(tmp_path / "l.txt", [{"path": str(videos / "a.mp4")}, {"path": "b.mp4"}], "txt")
    (tmp_path / "b.mp4").symlink_to(videos / "b.mp4")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sample", "--inputs-from", str(m), "-n", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 clip(s) written, 0 already done, 0 failed" in res.output


def test_an_excel_csv_is_read(videos: Path, tmp_path: Path) -> None:
    """Excel's CSV: a UTF-8 BOM, CRLF line ends, a header in another case with spaces
    (`` Path ``, ``ID``), quoted fields holding commas and line ends, extra columns, and
    empty trailing rows."""
    m = tmp_path / "excel.csv"
    m.write_bytes(
        b"\xef\xbb\xbf Path ,Notes,ID,Start_S\r\n"
        + f'{videos / "a.mp4"},"one, two\r\nthree",x1,0.5\r\n'.encode()
        + f"{videos / 'b.mp4'},,x2,\r\n,,,\r\n,,,\r\n".encode()
    )
    items = list(manifest_inputs(m))
    assert [(i.path, i.id, i.start_s, i.error) for i in items] == [
        (videos / "a.mp4", "x1", 0.5, None),
        (videos / "b.mp4", "x2", None, None),
    ]
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert (s.done, s.failed) == (2, [])


def test_a_semicolon_csv_is_read_with_its_decimal_commas(videos: Path, tmp_path: Path) -> None:
    """European Excel writes ``;`` between fields and a decimal comma."""
    m = tmp_path / "eu.csv"
    m.write_text(f"path;id;start_s;end_s\n{videos / 'b.mp4'};e1;0,5;1\n", encoding="utf-8")
    (item,) = manifest_inputs(m)
    assert (item.path, item.id, item.start_s, item.end_s) == (videos / "b.mp4", "e1", 0.5, 1.0)


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet"])
def test_column_names_match_without_case_or_spaces(videos: Path, tmp_path: Path, fmt: str) -> None:
    rows = [{" Path": str(videos / "a.mp4"), "ID": "k", "END_S": 0.5}]
    (item,) = manifest_inputs(_write(tmp_path / f"l.{fmt}", rows, fmt))
    assert (item.path, item.id, item.end_s, item.error) == (videos / "a.mp4", "k", 0.5, None)


def test_two_columns_for_one_are_one_error(tmp_path: Path) -> None:
    m = tmp_path / "twin.csv"
    m.write_text("path,Path\na.mp4,b.mp4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twin\.csv: the manifest has several 'path' columns"):
        collect_inputs([], inputs_from=m)


def test_a_json_true_is_no_time_and_an_object_no_id(videos: Path, tmp_path: Path) -> None:
    m = tmp_path / "rows.jsonl"
    rows = [
        {"path": str(videos / "b.mp4"), "id": "t", "start_s": True},
        {"path": str(videos / "b.mp4"), "id": {"a": 1}},
    ]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    items = list(manifest_inputs(m))
    assert [(i.id, i.error) for i in items] == [
        ("t", f"{m}:1: start_s (True) is not a number of seconds"),
        (None, f"{m}:2: id {{'a': 1}} is not a string or a number"),
    ]


def test_a_file_uri_row_is_its_local_file(tmp_path: Path, videos: Path) -> None:
    spaced = tmp_path / "my clips" / "a b.mp4"
    spaced.parent.mkdir()
    spaced.write_bytes((videos / "a.mp4").read_bytes())
    m = tmp_path / "uris.txt"
    m.write_text(f"{spaced.as_uri()}\nfile://localhost{videos / 'b.mp4'}\n", encoding="utf-8")
    items = list(manifest_inputs(m))
    assert [(i.path, i.uri, i.error) for i in items] == [
        (spaced, None, None),
        (videos / "b.mp4", None, None),
    ]


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv"])
def test_a_utf16_manifest_is_read(videos: Path, tmp_path: Path, fmt: str) -> None:
    """Excel's "Unicode Text" and "CSV UTF-16" exports start with a UTF-16 byte-order mark."""
    text = {"txt": "a.mp4\n", "csv": "path,id\na.mp4,x\n", "tsv": "path\tid\na.mp4\tx\n"}[fmt]
    m = tmp_path / f"list.{fmt}"
    m.write_bytes(text.encode("utf-16"))
    (tmp_path / "a.mp4").write_bytes((videos / "a.mp4").read_bytes())
    items = list(manifest_inputs(m))
    assert [(i.path, i.error) for i in items] == [(tmp_path / "a.mp4", None)]


def test_a_utf16_jsonl_is_one_error_and_a_nul_in_a_path_a_failed_record(
    videos: Path, tmp_path: Path
) -> None:
    m = tmp_path / "list.jsonl"
    m.write_bytes('{"path": "a.mp4"}\n'.encode("utf-16"))
    with pytest.raises(ConfigError, match="the manifest is UTF-16 text; JSON Lines are UTF-8"):
        collect_inputs([], inputs_from=m)
    nul = tmp_path / "nul.txt"
    nul.write_text(f"{videos / 'a'}\0.mp4\n{videos / 'b.mp4'}\n", encoding="utf-8")
    s = sample([], tmp_path / "out", CFG, inputs_from=nul, workers=0)
    assert s.done == 1 and [e for _, e in s.failed] == [
        f"{nul}:1: path '{videos / 'a'}\\x00.mp4' holds a NUL character"
    ]


def test_a_manifest_listing_itself_or_another_is_a_failed_record_saying_so(
    videos: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.csv"
    other.write_text(f"path\n{videos / 'a.mp4'}\n", encoding="utf-8")
    m = tmp_path / "list.txt"
    m.write_text(f"list.txt\nother.csv\n{videos / 'b.mp4'}\n", encoding="utf-8")
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert s.done == 1 and sorted(e for _, e in s.failed) == [
        f"{m}: a manifest, not an input (listed at {m}:1); manifests list inputs",
        f"{other}: a manifest, not an input (listed at {m}:2); manifests list inputs",
    ]


def test_a_list_piped_to_inputs_from_dash_is_read_and_a_second_pipe_resumes(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "w"
    (work / "v").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4"):
        (work / "v" / name).write_bytes((videos / name).read_bytes())
    monkeypatch.chdir(work)
    found = "./v/a.mp4\n./v/b.mp4\n./v/gone.mp4\n"  # as `find . -name '*.mp4'` prints them
    cmd = ["sample", "-n", "2", "--inputs-from", "-", "-o", "out"]
    for again in (False, True):
        monkeypatch.setattr("framepipe.inputs.manifest._stdin", {}, raising=False)  # a new process
        res = CliRunner().invoke(cli, cmd, input=found)
        assert res.exit_code == 1, res.output
        done = "0 clip(s) written, 2 already done" if again else "2 clip(s) written"
        assert done in res.output and "1 failed" in res.output
        assert "v/gone.mp4: no such file (listed at <stdin>:3" in res.output
    recs = {r["source"]: r["status"] for r in read_records(work / "out" / MANIFEST)}
    assert recs == {"v/a.mp4": "ok", "v/b.mp4": "ok", "v/gone.mp4": "failed"}
    # JSON Lines and CSV are told by their content
    for text in ('{"path": "v/a.mp4", "id": "j"}\n', "Path;id\nv/a.mp4;c\n"):
        monkeypatch.setattr("framepipe.inputs.manifest._stdin", {}, raising=False)
        res = CliRunner().invoke(cli, [*cmd[:-1], "o2"], input=text)
        assert res.exit_code == 0, res.output
    assert {r["id"] for r in read_records(work / "o2" / MANIFEST)} == {"j", "c"}
    # nothing piped in: one line, not a wait
    monkeypatch.setattr("framepipe.inputs.manifest._stdin", {}, raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    with pytest.raises(ConfigError, match="stdin is a terminal"):
        collect_inputs(inputs_from="-")


def _starts_before_zero(d: Path) -> Path:
    """50 self-indexing frames at 25 fps in Matroska, the first at -0.5 s (written with a
    negative offset, as a stream-copy cut that keeps its timing does)."""
    import media

    src = media.ffmpeg_encode(d / "src.mkv", ["-c:v", "libx264", "-g", "25"], 50, 25)
    neg = d / "neg.mkv"
    media.ffmpeg(
        *("-i", str(src), "-c", "copy", "-output_ts_offset", "-0.5"),
        *("-avoid_negative_ts", "disabled", str(neg)),
    )
    return neg


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command-line tool")
def test_a_range_without_start_keeps_the_frames_before_zero(tmp_path: Path) -> None:
    """A row with only ``end_s`` holds the video from its first frame. On a video whose
    first frames are at negative times (a Matroska file written with a negative offset),
    those frames were silently left out, as if the range began at 0 s."""
    from framepipe.read_clips import read_clips

    neg = _starts_before_zero(tmp_path)
    item = Input(neg, "video", end_s=0.5)
    (rec,) = [j.record() for j in read_clips(item, SampleConfig(n=2), read_frames=False)]
    assert rec.clip is not None
    # 25 fps from -0.5 s: frames 0..24 are the ones before 0.5 s
    assert (rec.clip["start_frame"], rec.clip["end_frame"]) == (0, 25)
    assert rec.clip["start_s"] == pytest.approx(-0.5)
    assert rec.timestamps_s is not None and rec.timestamps_s[0] < 0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command-line tool")
def test_a_row_range_may_be_at_negative_times(tmp_path: Path) -> None:
    """Times are on the clock of the records' ``timestamps_s``, which is before 0 s at the
    start of some videos: a row asking for that part was refused ("must be a finite number
    >= 0")."""
    neg = _starts_before_zero(tmp_path)
    m = tmp_path / "rows.csv"
    m.write_text(f"path,start_s,end_s\n{neg},-0.3,0.1\n{neg},inf,\n")
    s = sample([], tmp_path / "out", SampleConfig(n=2), inputs_from=m, workers=0)
    assert s.done == 1
    assert [e.split(": ", 1)[1] for _, e in s.failed] == ["start_s ('inf') must be a finite number"]
    (rec,) = [r for r in read_records(tmp_path / "out" / MANIFEST) if r["status"] == "ok"]
    # 25 fps from -0.5 s: frames 5..14 are the ones from -0.3 s to before 0.1 s
    assert (rec["clip"]["start_frame"], rec["clip"]["end_frame"]) == (5, 15)
    assert rec["clip"]["start_s"] == pytest.approx(-0.3)
