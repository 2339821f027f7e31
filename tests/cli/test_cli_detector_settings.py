"""A shot detector setting that the chosen detector does not read is refused before any
input is read (exit status 2, one line naming the setting, the detector and the settings it
takes) on every path that takes detector settings: ``shots --opt``, the keyframe sampler's
``--sampler-opt`` and the shots clip planner's ``--clip-opt``. ``shots --help`` lists each
detector's settings from the registry."""

from __future__ import annotations

from pathlib import Path

import engine_plugins
import pytest
from click.testing import CliRunner, Result

from framepipe import extras
from framepipe.cli import cli
from framepipe.shots.detectors import DETECTORS

TRANSNET = "(its settings: transnet_threshold, dark_level, min_contrast)"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return engine_plugins.make_video(tmp_path_factory.mktemp("detector-settings") / "v.mp4", 6)


@pytest.fixture(autouse=True)
def transnet_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusals do not depend on the transnet extra being installed here."""
    monkeypatch.setattr(extras, "installed", lambda module: True)


def _refused(res: Result, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), res.output


SHOTS = [
    (["--detector", "transnetv2", "--opt", "cut_ratio=3"],
     ["cut_ratio is not a setting of shot detector 'transnetv2'", TRANSNET]),
    (["--opt", "transnet_threshold=0.9"],
     ["transnet_threshold is not a setting of shot detector 'builtin'",
      "structure_threshold", "cut_ratio"]),
    (["--detector", "builtin", "--opt", "detector=transnetv2"],
     ["--opt detector", "--detector"]),
    (["--opt", "detector=builtin"], ["--opt detector", "--detector"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "needles"), SHOTS, ids=[" ".join(a) for a, _ in SHOTS])
def test_shots_refuses_a_setting_its_detector_does_not_take(
    video: Path, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    _refused(CliRunner().invoke(cli, ["shots", str(video), *args]), *needles)
    # before any input is read: a missing input would be exit status 1
    _refused(CliRunner().invoke(cli, ["shots", str(tmp_path / "missing.mp4"), *args]), *needles)


def test_shots_takes_the_settings_its_detector_reads(video: Path) -> None:
    res = CliRunner().invoke(cli, ["shots", str(video), "--opt", "structure_threshold=0.2"])
    assert res.exit_code == 0, res.output


RUNS = [
    (["--sampler", "keyframe", "--sampler-opt", "detector=transnetv2",
      "--sampler-opt", "cut_ratio=3"],
     ["cut_ratio is not a setting of shot detector 'transnetv2'", TRANSNET]),
    (["--sampler", "keyframe", "--sampler-opt", "transnet_threshold=0.9"],
     ["transnet_threshold is not a setting of shot detector 'builtin'"]),
    (["--clips", "shots", "--clip-opt", "detector=transnetv2", "--clip-opt", "cut_ratio=3"],
     ["cut_ratio is not a setting of shot detector 'transnetv2'", TRANSNET]),
    (["--clips", "shots", "--clip-opt", "transnet_threshold=0.9"],
     ["transnet_threshold is not a setting of shot detector 'builtin'"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "needles"), RUNS, ids=[" ".join(a) for a, _ in RUNS])
@pytest.mark.parametrize("command", ["sample", "caption"])
def test_runs_refuse_a_setting_the_detector_does_not_take(
    video: Path, tmp_path: Path, command: str, args: list[str], needles: list[str]
) -> None:
    out = tmp_path / ("out" if command == "sample" else "r.jsonl")
    ask = ["-q", "Q?", "--model", str(tmp_path / "no-model")] if command == "caption" else []
    res = CliRunner().invoke(cli, [command, str(video), "-o", str(out), *ask, *args])
    _refused(res, *needles)
    assert not out.exists()


def test_shots_help_lists_every_detectors_settings_from_the_registry() -> None:
    res = CliRunner().invoke(cli, ["shots", "--help"], terminal_width=10_000)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for name, detector in DETECTORS.items():
        assert f"{name}: {', '.join(detector.settings)}" in text, name
    assert "structure_threshold" in text
