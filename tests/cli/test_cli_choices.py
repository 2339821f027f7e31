"""The command line takes its --kind, --clips and --sampler choices from the registries, so a
registered plug-in is selectable, and shows the defaults of the configs themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import media
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.clips import CLIP_PLANNERS, register_clip_planner, whole_clip
from framepipe.config import SampleConfig
from framepipe.samplers.base import SAMPLERS
from framepipe.sources.base import SOURCES
from framepipe.types import ClipSpec, SourceInfo


def test_help_lists_the_registered_names() -> None:
    out = " ".join(CliRunner().invoke(cli, ["sample", "--help"], terminal_width=300).output.split())
    assert f"--clips [{'|'.join(CLIP_PLANNERS.names())}]" in out
    assert f"--kind [{'|'.join(SOURCES.names())}]" in out
    assert f"Sampler: {', '.join(SAMPLERS.names())}, or module:function." in out
    assert f"[default: {SampleConfig().n}]" in out and f"[default: {SampleConfig().sampler}]" in out


def test_a_registered_clip_planner_is_a_cli_choice(tmp_path: Path) -> None:
    video = media.h264_mp4(tmp_path / "v.mp4")

    def halves(info: SourceInfo, *, source: Any = None, **params: Any) -> list[ClipSpec]:
        mid = info.num_frames // 2
        return [
            ClipSpec(info.id, 0, mid, 0, label="half"),
            ClipSpec(info.id, mid, info.num_frames, 1, label="half"),
        ]

    register_clip_planner("test_halves")(halves)
    try:
        res = CliRunner().invoke(
            cli,
            # in this process: the planner is a closure, which a decoding worker cannot import
            [
                *("sample", str(video), "-n", "2", "--clips", "test_halves", "--workers", "0"),
                *("-o", str(tmp_path / "o")),
            ],
        )
        assert res.exit_code == 0, res.output
        recs = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
        assert [r["clip"]["label"] for r in recs] == ["half", "half"]
    finally:
        CLIP_PLANNERS._items.pop("test_halves", None)
    res = CliRunner().invoke(cli, ["sample", str(video), "--clips", "test_halves", "-o", "x"])
    assert res.exit_code == 2 and "test_halves" in res.output


def test_unknown_clip_options_are_a_one_line_error(tmp_path: Path) -> None:
    import pytest

    from framepipe.clips import plan_clips
    from framepipe.errors import ConfigError

    info = SourceInfo("x", "video", 10, 4, 4)
    assert plan_clips(info) == [whole_clip(info)]
    with pytest.raises(ConfigError, match=r"unknown parameter.*min_shot_s.*--clips whole"):
        plan_clips(info, min_shot_s=2)
