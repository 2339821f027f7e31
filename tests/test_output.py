import json
from pathlib import Path

import numpy as np

from framepipe.output import JsonlWriter, contact_sheet, read_records, write_frames
from framepipe.records import failed_record
from framepipe.types import ClipResult, FrameBatch


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
