"""``framepipe shots``, shots as clips (``--clips shots``) and the keyframe sampler through
the ``sample`` command."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from shot_media import EditTruth, ShotSpec, make_edit_video

from framepipe.cli import cli
from framepipe.clips import plan_clips
from framepipe.errors import ConfigError
from framepipe.sources.base import open_source


@pytest.fixture(scope="module")
def cuts_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EditTruth]:
    path = tmp_path_factory.mktemp("shots_cli") / "cuts.mp4"
    script = [
        ShotSpec(41, 40),
        ("cut", 0),
        ShotSpec(42, 30),
        ("cut", 0),
        ShotSpec(43, 80),
        ("cut", 0),
        ShotSpec(44, 50),
    ]
    return path, make_edit_video(path, script)  # type: ignore[arg-type]


def test_shots_json(cuts_video: tuple[Path, EditTruth]) -> None:
    path, truth = cuts_video
    res = CliRunner().invoke(cli, ["shots", str(path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert isinstance(data, list) and len(data) == 1
    entry = data[0]
    assert entry["source"] == str(path)
    shots = entry["shots"]
    assert [s["start_frame"] for s in shots] == [0, *truth.cuts]
    assert shots[-1]["end_frame"] == truth.num_frames
    for a, b in itertools.pairwise(shots):
        assert a["end_frame"] == b["start_frame"] and a["end_s"] == pytest.approx(b["start_s"])
    assert shots[1]["start_s"] == pytest.approx(truth.cuts[0] / 25.0)


def test_shots_table_and_a_bad_input(cuts_video: tuple[Path, EditTruth], tmp_path: Path) -> None:
    path, truth = cuts_video
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video at all" * 20)
    res = CliRunner().invoke(cli, ["shots", str(path), str(bad)])
    assert res.exit_code == 1  # the bad input fails, after the good one is printed
    assert f"{len(truth.cuts) + 1} shot(s)" in res.stdout
    assert "broken.mp4" in res.stderr
    res = CliRunner().invoke(cli, ["shots", str(bad), "--json"])
    data = json.loads(res.stdout)
    assert data[0]["status"] == "failed" and "broken.mp4" in data[0]["error"]


def test_shots_rejects_unknown_option(cuts_video: tuple[Path, EditTruth]) -> None:
    path, _ = cuts_video
    res = CliRunner().invoke(cli, ["shots", str(path), "--opt", "nonsense=1"])
    assert res.exit_code == 2 and "nonsense" in res.output


def test_shot_clips_merge_and_split(cuts_video: tuple[Path, EditTruth]) -> None:
    path, truth = cuts_video
    with open_source(path) as src:
        info = src.info()
        clips = plan_clips(info, mode="shots", source=src, min_shot_s=0.5, max_shot_s=30)
        assert [c.start_frame for c in clips] == [0, *truth.cuts]
        assert all(c.label == "shot" for c in clips)
        assert [c.index for c in clips] == list(range(len(clips)))
        # the 30-frame (1.2 s) shot joins its shorter neighbour
        merged = plan_clips(info, mode="shots", source=src, min_shot_s=1.5)
        assert len(merged) == len(clips) - 1
        assert merged[-1].end_frame == info.num_frames
        split = plan_clips(info, mode="shots", source=src, min_shot_s=0.5, max_shot_s=1.0)
        assert all(c.end_s - c.start_s <= 1.0 + 1e-6 for c in split)  # type: ignore[operator]
        assert len(split) > len(clips)
        with pytest.raises(ConfigError):
            plan_clips(info, mode="shots", source=src, min_shot_s=5, max_shot_s=2)
        for unbounded in (None, 0, "none", float("inf"), "inf"):  # no split
            kw = {"min_shot_s": 0.5, "max_shot_s": unbounded}
            assert plan_clips(info, mode="shots", source=src, **kw) == clips


def test_sample_with_keyframe_sampler_and_shot_clips(
    cuts_video: tuple[Path, EditTruth], tmp_path: Path
) -> None:
    path, truth = cuts_video
    out = tmp_path / "out"
    args = ["sample", str(path), "-o", str(out), "-n", "2", "--sampler", "keyframe"]
    args += ["--clips", "shots", "--clip-opt", "min_shot_s=0.5", "--no-sheet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == len(truth.cuts) + 1
    for rec in records:
        assert rec["status"] == "ok"
        assert rec["clip"]["label"] == "shot"
        a, b = rec["clip"]["start_frame"], rec["clip"]["end_frame"]
        assert all(a <= i < b for i in rec["indices"])
        assert rec["selection"]["frame_shots"] == [0, 0]  # one shot per clip
        assert rec["sampler"]["name"] == "keyframe"


@pytest.mark.parametrize("sampler", ["uniform", "keyframe", "iframe", "nview"])
def test_every_sampler_takes_the_cli_overflow_and_refuses_a_typo(
    sampler: str, cuts_video: tuple[Path, EditTruth], tmp_path: Path
) -> None:
    path, _ = cuts_video
    args = ["sample", str(path), "-n", "3", "--sampler", sampler, "--no-sheet"]
    res = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a"), "--overflow", "all"])
    assert res.exit_code == 0, res.output
    (rec,) = [json.loads(s) for s in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert rec["status"] == "ok" and rec["sampler"]["params"]["overflow"] == "all"
    res = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b"), "--sampler-opt", "bogus=1"])
    assert res.exit_code == 2  # refused before any work, not a failed record per input
    assert f"unknown parameter 'bogus' for sampler '{sampler}'" in res.output
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("setting", ["min_shot_s=nan", "max_shot_s=nan", "min_shot_s=inf"])
def test_shot_clips_refuse_a_limit_that_is_not_a_finite_number(
    cuts_video: tuple[Path, EditTruth], tmp_path: Path, setting: str
) -> None:
    # NaN passed every comparison: min_shot_s=nan merged the whole video into one clip and
    # max_shot_s=nan failed every input with "ValueError: cannot convert float NaN to integer"
    path, _ = cuts_video
    args = ["sample", str(path), "-o", str(tmp_path / "out"), "--clips", "shots"]
    res = CliRunner().invoke(cli, [*args, "--clip-opt", setting, "--no-sheet"])
    assert res.exit_code == 2, res.output
    assert setting.split("=")[0] in res.output
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
