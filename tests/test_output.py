import json
import logging
from pathlib import Path

import numpy as np
import pytest

from framepipe.errors import OutputError
from framepipe.output import JsonlWriter, contact_sheet, read_records, write_frames
from framepipe.output.parquet import write_parquet
from framepipe.records import failed_record
from framepipe.types import ClipResult, FrameBatch
from framepipe.utils import NotTextError, json_lines


def test_append_resume_and_torn_line(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "r.jsonl"
    with JsonlWriter(out) as w:
        w.write(ClipResult(source="a", key="k1"))
        w.write(failed_record("b", "b: broken", key="k2"))
    # a killed process leaves half a line behind
    with open(out, "a", encoding="utf-8") as fh:
        fh.write('{"source": "c", "sta')
    with JsonlWriter(out) as w:
        assert w.is_done("k1")
        assert not w.is_done("k2")  # failed clips are retried
        w.write(ClipResult(source="c", key="k3"))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["source"] for x in lines] == ["a", "b", "c"]
    assert [r["status"] for r in read_records(out)] == ["ok", "failed", "ok"]
    with JsonlWriter(out, overwrite=True) as w:
        assert not w.is_done("k1")
    assert out.read_text() == ""


def test_write_frames_and_sheet(tmp_path: Path) -> None:
    frames = np.zeros((3, 20, 30, 3), np.uint8)
    frames[1] = 255
    batch = FrameBatch(frames, (4, 9, 9), (0.1, 0.3, 0.3))
    paths = write_frames(batch, tmp_path / "c", tmp_path, fmt="png")
    assert paths == [
        "c/frame_000_i000004.png",
        "c/frame_001_i000009.png",
        "c/frame_002_i000009_r1.png",
    ]
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / paths[1])).min() == 255
    sheet = contact_sheet(batch, tile_width=60)
    assert sheet.size == (120, 2 * (40 + 18))


def test_times_in_records_are_rounded_to_microseconds(tmp_path: Path) -> None:
    from framepipe.records import clip_fields
    from framepipe.types import ClipSpec, Selection, SourceInfo

    t = 0.1 + 0.2  # 0.30000000000000004
    info = SourceInfo("v.mp4", "video", 3, 4, 4, timestamps_s=(0.0, 0.1, t))
    sel = Selection((2,), "keyframe", {"min_gap_s": t}, {"shots": [{"start_s": t, "score": t}]})
    fields = clip_fields(info, ClipSpec("v.mp4", 0, 3, start_s=t, end_s=t), sel)
    rec = ClipResult(source="v.mp4", timings_s={"decode_s": t}, **fields, extra={"t_s": [t]})
    assert rec.selection == {"shots": [{"start_s": 0.3, "score": t}]}  # a score is no time
    out = tmp_path / "r.jsonl"
    with JsonlWriter(out) as w:
        w.write(rec)
    line = out.read_text()
    assert "0.30000000000000004" in line  # the score, only
    (got,) = read_records(out)
    assert got["timestamps_s"] == [0.3] and got["clip"]["start_s"] == 0.3
    assert got["selection"]["shots"][0]["start_s"] == 0.3
    assert got["sampler"]["params"]["min_gap_s"] == 0.3 and got["timings_s"]["decode_s"] == 0.3
    assert got["t_s"] == [0.3] and line.count("0.30000000000000004") == 1


def test_a_line_that_is_not_utf8_is_skipped_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "r.jsonl"
    with JsonlWriter(out) as w:
        w.write(ClipResult(source="a", key="k1"))
    with open(out, "ab") as fh:
        fh.write(b"\xff\xff\n")  # a line of bytes that are no UTF-8 text
    with JsonlWriter(out) as w:  # a resume
        assert w.is_done("k1")
        w.write(ClipResult(source="b", key="k2"))
    assert [r["key"] for r in read_records(out)] == ["k1", "k2"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{out}:2: skipping an unreadable line (not UTF-8 text)" in said
    assert out.read_bytes().count(b"\n") == 3  # nothing rewritten away


def test_json_lines_goes_on_after_a_line_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\xfe{"b"\n\n{"c": 3}\n')
    got = list(json_lines(path))
    assert [n for n, _ in got] == [1, 2, 4]
    assert got[0][1] == {"a": 1} and got[2][1] == {"c": 3}
    assert isinstance(got[1][1], NotTextError) and got[1][1].msg == "not UTF-8 text"


def _parquet_bytes(tmp_path: Path) -> bytes:
    pq = tmp_path / "p.parquet"
    write_parquet([ClipResult(source="a", key="k1").to_json()], pq)
    return pq.read_bytes()


@pytest.mark.parametrize("what", ["parquet", "video"])
def test_a_file_that_is_not_json_lines_is_refused_and_left_as_it_was(
    tmp_path: Path, what: str
) -> None:
    path = tmp_path / "r.jsonl"
    if what == "parquet":
        data = _parquet_bytes(tmp_path)
        needle = f"{path}: a Parquet file, not JSON lines (name it .parquet)"
    else:
        data = b"\0\0\0\x20ftypisom\0\0\x02\0\n\x8f\xa3\x00" * 50  # no newline at its end
        needle = f"{path}: not a JSON-lines records file (line 1 is not UTF-8 text)"
    path.write_bytes(data)
    with pytest.raises(OutputError) as exc:
        list(read_records(path))
    assert str(exc.value) == needle
    with pytest.raises(OutputError) as exc:
        JsonlWriter(path)  # a resume onto it: refused before its "torn" tail is cut
    assert str(exc.value) == needle
    assert path.read_bytes() == data


def test_contact_sheet_of_a_very_tall_view_stays_bounded() -> None:
    """A scene with a 2x3000 view beside ordinary ones: every cell was made 480,000 pixels
    tall (3 GB, then a JPEG too large to write); the tall view is shrunk into the cell."""
    frames = [np.full((30, 40, 3), 50, np.uint8), np.full((3000, 2, 3), 200, np.uint8)]
    batch = FrameBatch(frames, (0, 1))
    sheet = contact_sheet(batch, tile_width=60)
    assert sheet.size == (120, 120 + 18)
    tile = np.asarray(sheet)[:120, 60:120]
    assert (tile == 200).all(axis=2).any()  # the tall view is drawn, shrunk
