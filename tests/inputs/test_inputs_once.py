"""An input listed more than once is read once: a manifest row repeated (however its path is
spelled), a row naming a path also given on the command line, a URI given twice; rows that
differ in id, clip range or questions stay apart. A ``file://`` URI on the command line is
the local file it names."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.inputs import collect_inputs
from framepipe.output import read_records
from framepipe.runs.sample import MANIFEST, sample

CFG = SampleConfig(n=2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("once_videos")
    engine_plugins.make_video(d / "a.mp4", 30, seed=1)
    engine_plugins.make_video(d / "b.mp4", 30, seed=2)
    return d


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_repeated_manifest_row_is_read_once_and_the_drop_is_logged(
    videos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = str(videos / "a.mp4")
    m = _jsonl(
        tmp_path / "list.jsonl",
        [
            {"path": a},
            {"path": "b.mp4"},  # relative to the manifest: it is in tmp_path
            {"path": a},  # the same row
            {"path": str(videos / "." / "a.mp4")},  # the same file, spelled otherwise
            {"path": a, "id": "x"},  # another id: another clip
            {"path": a, "id": "x"},
            {"path": a, "start_s": 0.5},  # another range
            {"path": a, "questions": ["Why?"]},  # other questions
            {"path": a, "questions": ["Why?"]},
        ],
    )
    (tmp_path / "b.mp4").write_bytes((videos / "b.mp4").read_bytes())
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert (s.done, s.skipped, s.failed) == (5, 0, [])
    recs = list(read_records(tmp_path / "out" / MANIFEST))
    assert len(recs) == 5 and len({r["key"] for r in recs}) == 5
    said = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert said == [
        f"{m}: 4 duplicate(s) dropped (the same file or URI, id, clip range and "
        "questions as an input listed before): each input is read once"
    ]


def test_a_row_naming_a_path_given_too_and_a_uri_given_twice_are_one_input_each(
    videos: Path, tmp_path: Path
) -> None:
    url = "https://example.org/v/c.mp4?sig=1"
    m = tmp_path / "list.txt"
    m.write_text(f"{videos / 'a.mp4'}\n{url}\nhttps://example.org/v/c.mp4?sig=2\n", "utf-8")
    inputs, _ = collect_inputs([str(videos), url, url], inputs_from=m)
    assert [i.source for i in inputs] == [
        str(videos / "a.mp4"),
        str(videos / "b.mp4"),
        url,
        "https://example.org/v/c.mp4?sig=2",  # another query: another object
    ]


def test_a_file_uri_on_the_command_line_is_its_local_file(videos: Path, tmp_path: Path) -> None:
    spaced = tmp_path / "my clips" / "a b%.mp4"
    spaced.parent.mkdir()
    spaced.write_bytes((videos / "a.mp4").read_bytes())
    out = tmp_path / "out"
    uris = [spaced.as_uri(), f"file://localhost{videos / 'b.mp4'}", str(videos / "b.mp4")]
    gone, elsewhere = (tmp_path / "gone.mp4").as_uri(), "file://host/data/c.mp4"
    res = CliRunner().invoke(
        cli, ["sample", "-n", "2", "--no-sheet", "-o", str(out), *uris, gone, elsewhere]
    )
    assert res.exit_code == 1, res.output
    recs = {r["source"]: r for r in read_records(out / MANIFEST)}
    assert sorted(recs) == sorted(
        [str(spaced), str(videos / "b.mp4"), str(tmp_path / "gone.mp4"), elsewhere]
    )
    assert recs[str(spaced)]["status"] == recs[str(videos / "b.mp4")]["status"] == "ok"
    assert recs[str(tmp_path / "gone.mp4")]["error"] == f"{tmp_path / 'gone.mp4'}: no such file"
    assert recs[elsewhere]["error"] == (
        f"{elsewhere}: a file:// URI names a file of this machine: file:///path or "
        "file://localhost/path"
    )
    info = CliRunner().invoke(cli, ["info", "--json", spaced.as_uri()])
    assert info.exit_code == 0 and json.loads(info.stdout)[0]["source"] == str(spaced)


def test_sample_rows_of_one_clip_with_other_questions_are_a_record_each(
    videos: Path, tmp_path: Path
) -> None:
    a = str(videos / "a.mp4")
    rows = [{"path": a}, {"path": a, "questions": ["Why?"]}, {"path": a, "questions": "How?"}]
    m = _jsonl(tmp_path / "list.jsonl", rows)
    s = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert (s.done, s.failed) == (3, [])
    recs = list(read_records(tmp_path / "out" / MANIFEST))
    assert sorted(str(r.get("questions")) for r in recs) == ["None", "['How?']", "['Why?']"]
    again = sample([], tmp_path / "out", CFG, inputs_from=m, workers=0)
    assert (again.done, again.skipped) == (0, 3)


def test_many_inputs_are_told_apart_and_each_repeat_is_caught() -> None:
    from framepipe.discovery import Input
    from framepipe.inputs.unique import Taken

    taken = Taken()
    items = [Input(Path("x.mp4"), "video", uri=f"s3://b/{k}.mp4") for k in range(20_000)]
    assert all(taken.first(i) for i in items) and len(taken) == 20_000
    assert not any(taken.first(i) for i in items[::7])
