"""The record helpers (framepipe.records): one constructor per outcome, a failed record's
error names its file exactly once, resume keys are stable, records are never changed."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.errors import DecodeError, SourceError
from framepipe.read_clips import read_clips
from framepipe.records import (
    ClipJob,
    failed_record,
    key_parts,
    ok_record,
    read_fields,
    record_key,
    source_fingerprint,
)
from framepipe.types import ClipResult, ClipSpec, FrameBatch, Selection, SourceInfo, ViewInfo

SRC = "/data/videos/a.mp4"
FP = {"path": SRC, "size": 1234, "mtime_ns": 1700000000000000000}
CLIP = ClipSpec(SRC, 24, 72, index=1, start_s=1.0, end_s=3.0, label="window")


@pytest.mark.parametrize(
    "error",
    [
        SourceError(SRC, "moov atom not found"),  # framepipe's own: names the file itself
        DecodeError(SRC, "the decoder process died (SIGSEGV)"),
        ValueError("bad\nvalue"),  # anything else: the file is put in front
        OSError(28, "No space left on device"),
        RuntimeError(),
        f"{SRC}: folder holds no video",  # a message naming the file is kept as it is
        "no frames",
    ],
)
def test_a_failed_record_names_its_file_exactly_once(error: BaseException | str) -> None:
    rec = failed_record(SRC, error, kind="video", key="k")
    assert rec.status == "failed" and rec.source == SRC and rec.key == "k"
    assert rec.error is not None and "\n" not in rec.error
    assert rec.error.count(SRC) == 1 and rec.error.startswith(f"{SRC}: ")
    # a later stage failing a clip says the same
    later = ClipJob(SRC, {"kind": "video"}).fail(error).record()
    assert later.error == rec.error


def test_failed_record_texts() -> None:
    assert failed_record(SRC, ValueError("x")).error == f"{SRC}: ValueError: x"
    assert failed_record(SRC, SourceError(SRC, "gone")).error == f"{SRC}: gone"
    err = OSError(28, "No space left on device")
    text = failed_record(SRC, err, doing="cannot write frames").error
    assert text == f"{SRC}: cannot write frames (OSError: [Errno 28] No space left on device)"
    assert text.count(SRC) == 1


def test_keys_are_stable() -> None:
    """The digests written in existing outputs: a re-run must find them again."""
    parts = key_parts(SampleConfig(n=4, clip_seconds=2.0))
    assert record_key(FP, parts, CLIP) == "6c049842bb801374"
    assert record_key(FP, parts) == "1783117d3fa8c336"  # open-error
    # the order settings are given in does not matter; what they say does
    assert record_key(dict(reversed(FP.items())), dict(reversed(parts.items())), CLIP) == (
        "6c049842bb801374"
    )
    assert record_key(FP, parts, dataclasses.replace(CLIP, label="shot")) != "6c049842bb801374"
    assert key_parts(SampleConfig(n=4), {"model": "m"})["model"] == "m"
    with_model = record_key(FP, key_parts(SampleConfig(n=4, clip_seconds=2.0), {"m": 1}), CLIP)
    assert with_model != "6c049842bb801374"


def test_source_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "v.mp4"
    f.write_bytes(b"1234")
    monkeypatch.chdir(tmp_path)
    fp = source_fingerprint(Path("v.mp4"))
    assert fp == source_fingerprint(f) and fp["path"] == str(f.resolve()) and fp["size"] == 4
    assert source_fingerprint(tmp_path / "missing") == {"path": str(tmp_path / "missing")}


def _ok() -> ClipResult:
    info = SourceInfo(
        SRC, "video", 96, 32, 18, fps=Fraction(24), timestamps_s=tuple(i / 24 for i in range(96))
    )
    sel = Selection((30, 50), "uniform", {"n": 2}, {"shots": 1})
    views = (ViewInfo("a"), ViewInfo("b"))
    batch = FrameBatch(np.zeros((2, 4, 4, 3), np.uint8), (30, 50), (1.25, 2.0833333), views)
    timings = {"open_s": 0.1, "decode_s": 0.2}
    return ok_record(SRC, **read_fields(info, CLIP, sel, batch, key="k", timings_s=timings))


def test_ok_record_json() -> None:
    rec = _ok()
    assert rec.to_json() == {
        "source": SRC,
        "kind": "video",
        "clip": CLIP.to_json(),
        "sampler": {"name": "uniform", "params": {"n": 2}},
        "indices": [30, 50],
        "timestamps_s": [1.25, 2.083333],
        "views": [{"name": "a", "pose_c2w": None}, {"name": "b", "pose_c2w": None}],
        "frames": None,
        "contact_sheet": None,
        "selection": {"shots": 1},
        "model": None,
        "prompt": None,
        "questions": None,
        "answers": None,
        "truncated": None,
        "generation": None,
        "timings_s": {"open_s": 0.1, "decode_s": 0.2},
        "status": "ok",
        "error": None,
        "key": "k",
    }
    assert list(rec.to_json()) == [f.name for f in dataclasses.fields(rec) if f.name != "extra"]


def test_records_are_never_changed() -> None:
    rec = _ok()
    before = json.dumps(rec.to_json())
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.status = "failed"  # type: ignore[misc]
    job = ClipJob(SRC, {f: getattr(rec, f) for f in ("kind", "indices", "timings_s", "extra")})
    more = job.record(answers=["x"], timings_s={"generate_s": 0.3}, extra={"tokens": 1})
    assert more.answers == ["x"] and more.extra == {"tokens": 1}
    assert list(more.timings_s) == ["open_s", "decode_s", "generate_s"]
    job.fail(ValueError("boom"), stage="generate")
    failed = job.record(questions=["q"], answers=["x"], extra={"tokens": 1})
    assert failed.status == "failed" and failed.error == f"{SRC}: ValueError: boom"
    assert failed.indices == [30, 50] and failed.answers == ["x"] and failed.questions == ["q"]
    assert list(failed.to_json())[-2:] == ["stage", "tokens"]  # extras keep their order
    assert json.dumps(rec.to_json()) == before  # the records it came from are as they were
    assert more.extra == {"tokens": 1} and more.status == "ok"


def test_stage_records_use_the_helpers(tmp_path: Path) -> None:
    """The stage functions' failed records: a path that is not an input, one that does not
    open; both name the file once and carry the input-level keys."""
    cfg = SampleConfig(n=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    item = Input(empty, "video", error=f"{empty}: folder holds no video, image scene or 3D model")
    (rec,) = [j.record() for j in read_clips(item, cfg)]
    assert rec.key == record_key({"path": str(empty.resolve())}, key_parts(cfg))
    assert rec.error is not None and rec.error.count(str(empty)) == 1
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    (rec,) = [j.record() for j in read_clips(Input(bad, "video"), cfg)]
    assert rec.status == "failed"
    assert rec.key == record_key({"path": str(bad.resolve())}, key_parts(cfg))
    assert rec.error is not None and rec.error.count(str(bad)) == 1
