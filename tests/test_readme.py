"""The README's Python snippets run as a newcomer runs them: each ```python block saved as a
script and run with ``python`` in a folder holding the files it names (``videos/``,
``scene_folder/``, ``video.mp4``, ``day1/``, ``day2/``).

The default model's hub id is served offline from a Hugging Face cache that holds the tiny
random-weight model under that id, so a snippet runs as printed, without the hub. A block
that cannot run here (it needs a GPU, a server or a cluster) starts with a comment line
``# illustrative: WHY``, which the reader sees, and is only compiled. Blocks that load a
model take longer and are ``slow``; the others run in the fast suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import media
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
MODEL_NAMES = ("caption", "iter_caption", "Pipeline", "ModelConfig", "GenerationSettings")
DEFAULT_MODEL = "llava-hf/llava-interleave-qwen-0.5b-hf"


def _needs_model(block: str) -> bool:
    return any(re.search(rf"\b{name}\b", block) for name in MODEL_NAMES)


def _params() -> list[object]:
    out = []
    for i, block in enumerate(BLOCKS):
        marks = [pytest.mark.slow] if _needs_model(block) else []
        first = block.split("\n", 1)[0]
        out.append(pytest.param(block, marks=marks, id=f"{i}-{first[:40]}"))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the snippets name: short videos, a scene of 16 views."""
    d = tmp_path_factory.mktemp("readme")
    for sub in ("videos", "day1", "day2"):
        (d / sub).mkdir()
        media.h264_mp4(d / sub / "a.mp4", num_frames=24)
    shutil.copy(d / "videos" / "a.mp4", d / "video.mp4")
    shutil.copytree(ROOT / "samples" / "scene_cubes", d / "scene_folder")
    return d


@pytest.fixture(scope="module")
def hub_cache(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache holding the tiny model as the default model's snapshot."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return cache


def test_the_readme_has_python_snippets() -> None:
    assert len(BLOCKS) >= 5
    assert all(b.strip() for b in BLOCKS)


@pytest.mark.parametrize("block", _params())
def test_each_python_snippet_of_the_readme_runs_as_a_script(
    block: str, workdir: Path, hub_cache: Path, tmp_path: Path
) -> None:
    """A snippet copied into a script ran into ``ConfigError: ... put the code that runs
    framepipe under if __name__ == "__main__"`` (the engine loop, ``iter_caption``): every
    block runs as printed, offline, with exit status 0."""
    compile(block, "README.md", "exec")
    if block.startswith("# illustrative:"):
        return
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    (run / "snippet.py").write_text(block)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "snippet.py"]
    proc = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
