"""What a newcomer meets on a second run and around it: a resume with nothing left to answer
loads no model, the tiny model's "already there" names ``--overwrite``, the demo runs twice
(slow), a failed manifest row keeps its ``id``, ``info --json`` prints exact durations, and
``framepipe shots`` on a folder without video says so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import engine_plugins
import numpy as np
import pytest
from click.testing import CliRunner

from framepipe.answering import Answering, AnswerSpec
from framepipe.cli import cli
from framepipe.errors import GenerationError
from framepipe.generate import GenerationSettings
from framepipe.generate.backend import TransformersBackend
from framepipe.output import read_output
from framepipe.records import ClipJob
from framepipe.types import FrameBatch

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


class _CountingSpec:
    """TEST DOUBLE of a backend spec: describes itself without loading, counts loads."""

    settings = GenerationSettings(batch_size=2)

    def __init__(self) -> None:
        self.loads = 0

    def describe(self) -> dict[str, Any]:
        return {"id": "test/counting", "random_weights": True}

    def load(self) -> Any:
        self.loads += 1

        class Loaded:
            def answer_each(self, requests: Any) -> list[Any]:
                return [GenerationError("a double: no answer") for _ in requests]

        return Loaded()


def test_the_answer_stage_loads_with_the_first_clip_to_answer() -> None:
    spec = _CountingSpec()
    answering = Answering(AnswerSpec(spec))  # type: ignore[arg-type]
    assert list(answering.records([])) == [] and spec.loads == 0  # nothing left: no load
    failed = ClipJob("a.mp4", {"kind": "video", "key": "k1"}).fail("a.mp4: broken")
    (rec,) = answering.records([failed])
    assert spec.loads == 0  # a failed clip needs no answer, and its record names the model
    assert rec.status == "failed" and rec.model == spec.describe()
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    ok = ClipJob("b.mp4", {"kind": "video", "key": "k2"}, FrameBatch(frames, (0,)))
    (rec,) = answering.records([ok])
    assert spec.loads == 1 and rec.error == "b.mp4: a double: no answer"


def test_a_resume_with_nothing_left_loads_no_model(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    videos = [engine_plugins.make_video(tmp_path / f"v{k}.mp4", 6, seed=k) for k in range(2)]
    out = tmp_path / "r.jsonl"
    args = ["caption", *map(str, videos), "-n", "2", "--model", str(tiny_model_dir)]
    args += ["--max-new-tokens", "2", "--dtype", "float32", "--workers", "1", "-o", str(out)]
    loads: list[int] = []
    load = TransformersBackend.load

    def counted(self: TransformersBackend) -> Any:
        loads.append(1)
        return load(self)

    monkeypatch.setattr(TransformersBackend, "load", counted)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "2 clip(s) answered" in res.output, res.output
    assert loads == [1] and "(model check and loading " in res.output
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "0 clip(s) answered, 2 already done" in res.output, res.output
    assert loads == [1]  # the second run loaded nothing, and says so
    assert "(model check, no weights loaded: " in res.output, res.output
    assert len(list(read_output(out))) == 2


def test_an_existing_tiny_model_names_the_flag(tiny_model_dir: Path) -> None:
    res = CliRunner().invoke(cli, ["make-tiny-model", str(tiny_model_dir)])
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: {tiny_model_dir}: a tiny model is already there (pass --overwrite to replace it)"
    )


@pytest.mark.slow
def test_the_demo_runs_twice(tmp_path: Path) -> None:
    """The README's first command ends with the demo: a second run resumes, reuses its tiny
    model, and the report shows each clip once."""
    if shutil.which("framepipe") is None:
        pytest.skip("the framepipe command is not installed")
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the hub is out of reach here anyway

    def demo() -> str:
        r = subprocess.run(
            ["bash", str(SAMPLES / "demo.sh"), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    demo()
    model = out / "tiny-random-model" / "config.json"
    built = model.stat().st_mtime_ns
    second = demo()
    assert "0 clip(s) answered, 3 already done" in second and "already there" not in second
    assert model.stat().st_mtime_ns == built  # reused
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('class="card ') == 3  # one card per clip


def test_a_failed_manifest_row_keeps_its_id(tmp_path: Path) -> None:
    video = engine_plugins.make_video(tmp_path / "v.mp4", 6)
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"path,id\n,row-a\n{video},row-b\n", encoding="utf-8")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli, ["sample", "--inputs-from", str(manifest), "-n", "2", "-o", str(out)]
    )
    assert res.exit_code == 1, res.output
    recs = {r["id"]: r for r in read_output(out / "manifest.jsonl")}
    assert recs["row-a"]["status"] == "failed"
    assert "clips.csv:2: empty path" in recs["row-a"]["error"]
    assert recs["row-b"]["status"] == "ok"


def test_info_json_prints_exact_durations(tmp_path: Path) -> None:
    # 63 frames at 30 fps: summing rounded frame times gives 2.0999999999999996
    video = engine_plugins.make_video(tmp_path / "v.mp4", 63, fps=30)
    res = CliRunner().invoke(cli, ["info", "--json", str(video)])
    assert res.exit_code == 0, res.output
    assert '"duration_s": 2.1,' in res.stdout
    assert json.loads(res.stdout)[0]["duration_s"] == 2.1


def test_shots_on_a_folder_without_video_says_so(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["shots", str(SAMPLES / "scene_cubes")])
    assert res.exit_code == 1
    assert f"error: {SAMPLES / 'scene_cubes'}: folder holds no video" in res.stderr
    assert "not a video" in res.stderr and "image scene or 3D model" not in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["shots", str(empty)])
    assert res.exit_code == 1 and res.stderr.strip() == f"error: {empty}: folder holds no video"


def test_a_cli_process_starts_with_every_command(tmp_path: Path) -> None:
    """``python -m framepipe`` lists every command (each module imports on its own)."""
    r = subprocess.run(
        [sys.executable, "-m", "framepipe", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0
    for name in ("caption", "info", "make-tiny-model", "merge", "report", "sample", "shots"):
        assert f"  {name} " in r.stdout
