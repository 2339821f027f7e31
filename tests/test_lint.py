"""The repository's own lint and type checks run as part of the suite (configured in
pyproject.toml), so CI fails on a ruff or mypy regression."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "framepipe", "tests", "benchmarks", "samples"],
        [sys.executable, "-m", "mypy"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_clean(cmd: list[str]) -> None:
    if cmd[0] == "ruff" and shutil.which("ruff") is None:
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
