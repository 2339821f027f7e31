"""A generation setting an OpenAI-compatible server cannot take is refused before any work
(exit status 2, one line) naming only the options that were given."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from framepipe.cli import cli

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

CASES = [
    (["--num-beams", "2"],
     "Error: --num-beams (2) has no OpenAI API equivalent (--backend openai): leave it at 1"),
    (["--repetition-penalty", "1.2"],
     "Error: --repetition-penalty (1.2) has no OpenAI API equivalent (--backend openai): leave "
     "it at 1"),
    (["--num-beams", "3", "--repetition-penalty", "1.1"],
     "Error: --num-beams (3) and --repetition-penalty (1.1) have no OpenAI API equivalent "
     "(--backend openai): leave them at 1"),
    ([], "Error: --backend openai needs --base-url (e.g. http://host:8000/v1)"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "line"), CASES, ids=[" ".join(a) or "no url" for a, _ in CASES])
def test_openai_backend_names_only_the_options_given(
    tmp_path: Path, args: list[str], line: str
) -> None:
    out = tmp_path / "r.jsonl"
    url = ["--base-url", "http://127.0.0.1:9/v1"] if args else []
    cmd = ["caption", str(SAMPLES / "shots.mp4"), "-q", "Q?", "-o", str(out), "--backend"]
    res = CliRunner().invoke(cli, [*cmd, "openai", *url, *args])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [line]
    assert not out.exists()
