"""A run stopped by a signal, as in a terminal or a batch job: SIGTERM (what a scheduler such
as SLURM sends every process of a job at its time limit) stops ``sample`` the way Ctrl-C
does: what is written stays, one line says so, the exit status is 143, and the same command
then completes the output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigterm_to_the_job_stops_a_run_like_ctrl_c_and_the_rerun_completes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    engine_plugins.make_video(folder / "a.mp4", 6)
    for name in ("slow-b.mp4", "slow-c.mp4", "slow-d.mp4"):
        engine_plugins.make_video(folder / name, 6)
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    cmd = [sys.executable, "-m", "framepipe", "sample", str(folder), "-n", "2", "-o", str(out)]
    cmd += ["--workers", "1", "--no-sheet", "--sampler", "engine_plugins:misbehaving"]
    cmd += ["--sampler-opt", "delay_s=1.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a job of its own: the signal goes to all its processes
    )
    try:
        deadline = time.monotonic() + 60
        while not _lines(manifest) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(_lines(manifest)) == 1, "a.mp4 written, the slow ones still to come"
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert re.search(
        rf"terminated \(SIGTERM\): \d clip\(s\) written to {re.escape(str(out))};", err
    )
    kept = _lines(manifest)
    assert len(kept) < 4 and all(json.loads(line)["status"] == "ok" for line in kept)

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in _lines(manifest)]
    assert sorted(Path(r["source"]).name for r in records) == [
        "a.mp4",
        "slow-b.mp4",
        "slow-c.mp4",
        "slow-d.mp4",
    ]
    assert all(r["status"] == "ok" for r in records)


def test_ctrl_c_in_any_command_exits_130_not_the_status_of_failed_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import framepipe.sources.base

    def interrupted(*a: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(framepipe.sources.base, "open_source", interrupted)
    video = ROOT / "samples" / "shots.mp4"
    for command in (["info", "--json"], ["shots"]):
        res = CliRunner().invoke(cli, [*command, str(video)])
        assert res.exit_code == 130, res.output
        assert res.stderr == "interrupted\n" and res.stdout == ""


def test_ctrl_c_in_shots_over_a_folder_keeps_the_shots_of_the_videos_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``framepipe shots videos/`` printed its tables only once every video was done: a long
    folder showed nothing for minutes, and Ctrl-C lost every video's shots. Each video's table
    is printed when its shots are found (errors in between, in order)."""
    import framepipe.shots

    real = framepipe.shots.detect_shots
    calls: list[object] = []

    def detect_then_interrupt(*a: object, **kw: object) -> object:
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(framepipe.shots, "detect_shots", detect_then_interrupt)
    a = engine_plugins.make_video(tmp_path / "a.mp4", 4)
    b = engine_plugins.make_video(tmp_path / "b.mp4", 4)
    res = CliRunner().invoke(cli, ["shots", str(a), str(b)])
    assert res.exit_code == 130, res.output
    assert res.stdout.startswith(f"{a}: 1 shot(s)\n"), res.stdout
    assert str(b) not in res.stdout
