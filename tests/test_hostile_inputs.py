"""No input stops a run (issue 11.5): the battery of tests/hostile_media.py, good inputs mixed
with 60+ bad ones of every kind, through ONE ``framepipe sample`` and ONE ``framepipe
caption`` invocation each, in a subprocess with a wall-clock limit.

Every good input gets an ``ok`` record; every bad one exactly one ``failed`` record whose
error is one line naming the path, or a ``note: skipping <path>`` line from discovery; no
traceback and no Python warning reaches stderr; the exit status is 1. The battery includes
inputs whose decoder hangs or crashes while opening (``tests/engine_plugins.py``'s
``*.stall`` kind): the default ``sample`` run (one worker process) must stop them after
``--decode-timeout``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hostile_media
import pytest

from framepipe.output import read_records

TESTS = Path(__file__).resolve().parent
DECODE_TIMEOUT_S = 12
WALL_S = 150
# The command as a user runs it, with the test plug-ins (*.stall, *.raises) registered first.
LAUNCH = "import sys, hostile_media; from framepipe.cli import main; main(sys.argv[1:])"


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> list[hostile_media.Case]:
    return hostile_media.make_battery(tmp_path_factory.mktemp("hostile"))


def _paths(cases: list[hostile_media.Case]) -> list[str]:
    root = cases[0].path
    while root.name != "in":
        root = root.parent
    return [str(root), *(str(c.path) for c in cases if c.explicit)]


def _run(args: list[str]) -> tuple[int, str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PYTHONWARNINGS", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, *args],
        env=env,
        capture_output=True,
        timeout=WALL_S,
    )
    out = (proc.stdout + proc.stderr).decode("utf-8", "backslashreplace")
    return proc.returncode, out, time.monotonic() - t0


def _shown(path: Path) -> str:
    """``path`` as the command prints it (a name that is not UTF-8 backslash-escaped)."""
    return str(path).encode("utf-8", "backslashreplace").decode("ascii", "replace")


def _check(cases: list[hostile_media.Case], records: list[dict[str, Any]], out: str) -> list[str]:
    """What is wrong with a run's records and output, one line per problem (empty: none);
    the problems of xfail cases are left out when that case is still broken."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_source.setdefault(r["source"], []).append(r)
    problems: list[str] = []
    known = {str(c.path) for c in cases}
    for src in by_source:
        if src not in known:
            problems.append(f"record for a path not in the battery: {src!r}")
    for c in cases:
        src = str(c.path)
        recs = by_source.get(src, [])
        bad: str | None = None
        if c.expect == "note":
            if recs:
                bad = f"expected a note, got {len(recs)} record(s)"
            elif f"note: skipping {_shown(c.path)}: " not in out:
                bad = "no note"
        elif len(recs) != 1:
            bad = f"expected one record, got {len(recs)}"
        elif c.expect == "ok" and recs[0]["status"] != "ok":
            bad = f"expected ok, got: {recs[0].get('error')}"
        elif c.expect == "failed" and recs[0]["status"] != "failed":
            bad = "expected a failed record, got ok"
        elif recs[0]["status"] == "failed":
            err = recs[0].get("error") or ""
            if "\n" in err or src not in err:
                bad = f"error not one line naming the file: {err!r}"
        if bad is not None and c.xfail is None:
            problems.append(f"{src} ({c.why}): {bad}")
    return problems


def _assert_clean(code: int, out: str, problems: list[str], elapsed_s: float) -> None:
    assert "Traceback" not in out, out[-6000:]
    assert "Warning:" not in out, [ln for ln in out.splitlines() if "Warning:" in ln]
    assert not problems, "\n".join(problems)
    assert code == 1, out[-3000:]
    assert elapsed_s < WALL_S


def test_battery_covers_every_kind(battery: list[hostile_media.Case]) -> None:
    bad = [c for c in battery if c.expect in ("failed", "note")]
    counts = {k: sum(c.kind == k for c in bad) for k in ("video", "scene", "3d", "fs")}
    assert len(bad) >= 60 and min(counts.values()) >= 8, counts
    assert {c.expect for c in battery if c.kind != "fs"} >= {"ok", "failed"}


def test_one_sample_run_over_the_battery(battery: list[hostile_media.Case], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    args = ["sample", *_paths(battery), "-n", "2", "--decode-timeout", str(DECODE_TIMEOUT_S)]
    args += ["--workers", "2"]  # the hangs in parallel (the default, one, is tested below)
    code, out, elapsed = _run([*args, "-o", str(out_dir)])
    records = list(read_records(out_dir / "manifest.jsonl"))
    _assert_clean(code, out, _check(battery, records, out), elapsed)
    # the hung and the crashed decoder were stopped
    errors = {Path(r["source"]).name: r["error"] for r in records if r["status"] == "failed"}
    assert f"did not finish within {DECODE_TIMEOUT_S} s" in errors["open_hang.stall"]
    assert "SIGSEGV" in errors["open_segv.stall"]
    # a library's own exception names the file, then says what it was
    pose = next(c.path for c in battery if c.path.name == "pose_open.raises")
    assert errors[pose.name] == f"{pose}: ValueError: a pose must hold finite numbers only"
    assert errors["bad_read.raises"].endswith(": KeyError: 'frame table'")
    # the good video under a name that is not UTF-8 has its frames written
    (odd,) = [c.path for c in battery if c.expect == "ok" and c.kind == "fs"]
    (rec,) = [r for r in records if os.fsencode(r["source"]) == os.fsencode(odd)]
    assert rec["frames"] and all((out_dir / f).is_file() for f in rec["frames"])


def test_one_caption_run_over_the_battery(
    battery: list[hostile_media.Case], tiny_model_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    args = ["caption", *_paths(battery), "-n", "2", "--model", str(tiny_model_dir)]
    args += ["--dtype", "float32", "--max-new-tokens", "2", "--device", "cpu"]
    args += ["--decode-timeout", str(DECODE_TIMEOUT_S), "-o", str(output)]
    code, out, elapsed = _run(args)
    records = list(read_records(output))
    _assert_clean(code, out, _check(battery, records, out), elapsed)
    assert all(r["answers"] for r in records if r["status"] == "ok")


def test_records_with_names_that_are_not_utf8_read_back_exactly(
    battery: list[hostile_media.Case], tmp_path: Path
) -> None:
    odd = [c.path for c in battery if b"\xff" in os.fsencode(c.path)]
    assert len(odd) == 2
    from framepipe.runs.sample import sample

    summary = sample([str(p) for p in odd], tmp_path / "o", workers=0)
    assert summary.done == 1 and len(summary.failed) == 1
    lines = (tmp_path / "o" / "manifest.jsonl").read_bytes().decode("utf-8").splitlines()
    assert sorted(os.fsencode(json.loads(x)["source"]) for x in lines) == sorted(
        map(os.fsencode, odd)
    )
    # Parquet strings are UTF-8 only: there such a name is kept as the console shows it
    pytest.importorskip("pyarrow")
    from framepipe.output.parquet import read_parquet

    summary = sample([str(p) for p in odd], tmp_path / "pq", workers=0, format="parquet")
    assert summary.done == 1 and len(summary.failed) == 1
    rows = list(read_parquet(tmp_path / "pq" / "manifest.parquet"))
    assert sorted(r["source"] for r in rows) == sorted(map(_shown, odd))


@pytest.mark.timeout(120)
def test_sample_stops_a_hung_decoder_by_default(tmp_path: Path) -> None:
    """``sample`` with its default workers: an input whose decoder hangs while opening is
    stopped after the decode timeout (before the fix it ran in-process and hung forever)."""
    import engine_plugins

    from framepipe.runs.sample import sample

    hang = tmp_path / "open_hang.stall"
    hang.write_bytes(b"x")
    good = engine_plugins.make_video(tmp_path / "good.mp4", 8, seed=1)
    t0 = time.monotonic()
    summary = sample([hang, good], tmp_path / "o", decode_timeout_s=2)
    assert time.monotonic() - t0 < 60
    assert summary.done == 1
    ((src, err),) = summary.failed
    assert src == str(hang) and "did not finish within 2 s" in err


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="runs as root: file permissions do not stop root from reading (chmod 000 is no test)",
)
def test_an_unreadable_file_is_one_failed_record(tmp_path: Path) -> None:
    import engine_plugins

    from framepipe.runs.sample import sample

    locked = engine_plugins.make_video(tmp_path / "locked.mp4", 8, seed=1)
    locked.chmod(0)
    try:
        summary = sample([tmp_path], tmp_path / "o", workers=0)
    finally:
        locked.chmod(0o644)
    ((src, err),) = summary.failed
    assert src == str(locked) and err == f"{locked}: cannot read (permission denied)"
