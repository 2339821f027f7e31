import json
import logging
import subprocess
import sys
from pathlib import Path

import media
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


@pytest.mark.parametrize("lines", [1, 3])
def test_a_whole_last_record_without_a_newline_is_kept(tmp_path: Path, lines: int) -> None:
    out = tmp_path / "r.jsonl"  # as another tool writes it (no newline at its end)
    recs = [json.dumps(ClipResult(source=f"s{i}", key=f"k{i}").to_json()) for i in range(lines)]
    out.write_text("\n".join(recs))
    with JsonlWriter(out) as w:
        assert w.is_done(f"k{lines - 1}")  # not cut as a torn one, and not done again
        w.write(ClipResult(source="new", key="new"))
    assert [r["key"] for r in read_records(out)] == [*(f"k{i}" for i in range(lines)), "new"]


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


def test_a_file_of_text_that_is_no_records_is_not_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"  # a caption run's -o given a CSV's name
    data = b"\n\nsource,answer\nv.mp4,a cat\n"
    path.write_bytes(data)
    with pytest.raises(OutputError) as exc:
        JsonlWriter(path)
    assert str(exc.value) == f"{path}: not a JSON-lines records file (line 3 is not a record)"
    assert path.read_bytes() == data


def test_a_records_file_with_a_utf8_bom_is_read_and_resumed(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"  # as a Windows editor saves it
    lines = [json.dumps(ClipResult(source=s, key=f"k{s}").to_json()) for s in "ab"]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    assert [r["source"] for r in read_records(path)] == ["a", "b"]
    with JsonlWriter(path) as w:
        assert w.is_done("ka") and w.is_done("kb")  # not run again beside its record


# -- a full disk ----------------------------------------------------------------------------
# RLIMIT_FSIZE (with SIGXFSZ ignored) makes a write past the limit go in part-way and then
# fail (EFBIG), as a write to a full disk does (ENOSPC): in a child process, so nothing of
# pytest's is limited.
FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
"""


def run_on_a_full_disk(limit: int, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` run in a child whose files cannot grow past ``limit`` bytes."""
    cmd = [sys.executable, "-c", FULL_DISK + code, str(limit), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


WRITE_UNTIL_FULL = """
from framepipe.errors import OutputError
from framepipe.output import JsonlWriter
from framepipe.types import ClipResult
w = JsonlWriter(sys.argv[1])
try:
    for i in range(100):
        w.write(ClipResult(source="x" * 300, key=f"new{i}"))
except OutputError as exc:
    print("refused:", exc)
w.close()
"""


def test_a_full_disk_leaves_no_half_line_and_the_writer_closes(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with JsonlWriter(out) as w:
        for i in range(3):
            w.write(ClipResult(source="a", key=f"k{i}"))
    size = out.stat().st_size
    proc = run_on_a_full_disk(size + 1000, WRITE_UNTIL_FULL, str(out))
    assert proc.returncode == 0, proc.stderr  # close() did not fail again
    assert "refused:" in proc.stdout and "cannot write" in proc.stdout
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    keys = [json.loads(line)["key"] for line in text.splitlines()]  # every line whole
    assert keys[:3] == ["k0", "k1", "k2"] and len(keys) > 3


def test_a_run_on_a_full_disk_stops_with_one_line_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    videos = tmp_path / "v"
    for i in range(4):
        media.h264_mp4(videos / f"v{i}.mp4", num_frames=10)
    out = tmp_path / "out"
    run = "from framepipe.cli import main; main()"
    proc = run_on_a_full_disk(3000, run, "sample", str(videos), "-n", "2", "-o", str(out))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{out / 'manifest.jsonl'}: cannot write (File too large)" in proc.stderr
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert 0 < len(lines) < 4 and all(json.loads(line) for line in lines)
    rerun = subprocess.run(
        [sys.executable, "-m", "framepipe", "sample", str(videos), "-n", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    recs = list(read_records(out / "manifest.jsonl"))
    assert sorted(Path(r["source"]).name for r in recs) == [f"v{i}.mp4" for i in range(4)]
    assert all(r["status"] == "ok" for r in recs)


def test_a_parquet_output_whose_name_is_not_utf8_is_written_and_resumed(tmp_path: Path) -> None:
    """``framepipe sample ... -o $'out\\xff' --format parquet`` wrote its records and then
    failed closing them with a UnicodeEncodeError traceback from pyarrow (which cannot open
    such a name); the file is opened by Python, so it is written, read back and resumed."""
    import os

    from framepipe.config import SampleConfig
    from framepipe.output import read_output
    from framepipe.runs.sample import sample

    video = media.h264_mp4(tmp_path / "v.mp4", num_frames=10)
    out = Path(os.fsdecode(bytes(tmp_path) + b"/out\xff"))
    first = sample([video], out, SampleConfig(n=2), format="parquet", workers=0)
    assert (first.done, first.failed) == (1, [])
    again = sample([video], out, SampleConfig(n=2), workers=0)
    assert (again.done, again.skipped) == (0, 1)
    (rec,) = read_output(out / "manifest.parquet")
    assert rec["source"] == str(video) and rec["status"] == "ok"
