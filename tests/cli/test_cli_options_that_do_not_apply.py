"""An option the chosen engine or backend would ignore is refused before any work (exit
status 2, one line naming it and what it applies to), when the user gave it: a default
never counts. Which options belong where is one table, ``framepipe.cli.run_options.APPLIES``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import engine_plugins
import pytest
from click.testing import CliRunner

import framepipe.runs.caption as runs_caption
import framepipe.runs.sample as runs_sample
from framepipe.cli import cli
from framepipe.cli.run_options import APPLIES

REFUSED = [
    ("sample", ["--ray-address", "10.0.0.1:6379"], "--ray-address applies to --engine ray"),
    ("sample", ["--decode-actors", "4"], "--decode-actors applies to --engine ray"),
    ("sample", ["--decode-cpus", "1"], "--decode-cpus applies to --engine ray"),  # its default
    ("sample", ["--engine", "ray", "--workers", "4"], "--workers does not apply to --engine ray"),
    ("caption", ["--generate-actors", "2"], "--generate-actors applies to --engine ray"),
    ("caption", ["--generate-gpus", "0"], "--generate-gpus applies to --engine ray"),
    ("caption", ["--engine", "ray", "--workers", "1"], "--workers does not apply to --engine ray"),
    ("caption", ["--engine", "ray", "--prefetch", "4"],
     "--prefetch does not apply to --engine ray"),
    ("caption", ["--base-url", "http://127.0.0.1:9/v1"],
     "--base-url does not apply to --backend transformers"),
    ("caption", ["--max-concurrency", "2"],
     "--max-concurrency does not apply to --backend transformers"),
    ("caption", ["--request-timeout", "30"],
     "--request-timeout does not apply to --backend transformers"),
]  # fmt: skip
OPENAI = ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]
for opt, value in [("--quantize", "4bit"), ("--dtype", "float32"), ("--device", "cpu"),
                   ("--revision", "main"), ("--attn", "sdpa"), ("--offline", None),
                   ("--trust-remote-code", None)]:  # fmt: skip
    given = [opt] if value is None else [opt, value]
    REFUSED.append(
        (
            "caption",
            [*OPENAI, *given],
            f"{opt} applies to --backend transformers, not --backend openai",
        )
    )


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records a run that starts (it should not)."""
    ran: list[str] = []

    def run(*_: Any, **__: Any) -> Any:
        ran.append("run")
        raise AssertionError("the run started")

    monkeypatch.setattr(runs_sample, "sample", run)
    monkeypatch.setattr(runs_caption, "caption", run)
    return ran


@pytest.mark.parametrize(
    ("command", "args", "needle"), REFUSED, ids=[" ".join(r[1]) for r in REFUSED]
)
def test_an_option_that_does_not_apply_is_refused_before_any_work(
    tmp_path: Path, nothing_runs: list[str], command: str, args: list[str], needle: str
) -> None:
    out = tmp_path / ("r.jsonl" if command == "caption" else "out")
    res = CliRunner().invoke(cli, [command, str(tmp_path / "v.mp4"), "-o", str(out), *args])
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith("Error: ") and needle in line, res.output
    assert nothing_runs == [] and not out.exists()


def test_options_at_their_defaults_never_count(tmp_path: Path) -> None:
    """A local run takes every engine option's default (Ray's included) without a word, and
    an option that applies is taken."""
    video = engine_plugins.make_video(tmp_path / "v.mp4", 6)
    out = tmp_path / "out"
    args = ["sample", str(video), "-n", "2", "--workers", "0", "--no-sheet", "-o", str(out)]
    res = CliRunner().invoke(cli, [*args, "--engine", "local"])
    assert res.exit_code == 0, res.output
    assert "1 clip(s) written" in res.output


def test_every_option_of_the_table_is_an_option_of_a_run_command() -> None:
    ctx = click.Context(cli)
    assert isinstance(cli, click.Group)
    names = {
        p.name
        for n in ("sample", "caption")
        if (cmd := cli.get_command(ctx, n))
        for p in cmd.params
    }
    assert set(APPLIES) <= names
    assert {chooser for chooser, _, _ in APPLIES.values()} == {"engine", "backend"}
