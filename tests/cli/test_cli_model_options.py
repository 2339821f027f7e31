"""``framepipe caption``'s model options become the run's ModelConfig: each option sets the
field of its name, ``--offline`` sets ``local_files_only``, and an option left out keeps
ModelConfig's own default."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import framepipe.extras
import framepipe.runs.caption as runs_caption
from framepipe.cli import cli
from framepipe.errors import FramepipeError
from framepipe.generate.config import DEFAULT_MODEL, ModelConfig


def _model_config(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> ModelConfig:
    seen: dict[str, Any] = {}

    def capture(*_: Any, model: ModelConfig, **__: Any) -> Any:
        seen["model"] = model
        raise FramepipeError("stopped before any input is read")

    monkeypatch.setattr(runs_caption, "caption", capture)
    # --quantize needs bitsandbytes, checked before anything else: here every extra is "there"
    monkeypatch.setattr(framepipe.extras, "installed", lambda module: True)
    res = CliRunner().invoke(cli, ["caption", "clip.mp4", "-o", "r.jsonl", *args])
    assert res.exit_code == 1 and "stopped before any input is read" in res.output, res.output
    return seen["model"]


def test_each_model_option_sets_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--model", "org/other-llava", "--revision", "v2", "--device", "cuda:1"]
    args += ["--dtype", "bfloat16", "--quantize", "8bit", "--attn", "eager"]
    args += ["--trust-remote-code", "--offline"]
    got = _model_config(monkeypatch, args)
    assert got == ModelConfig(
        model="org/other-llava",
        revision="v2",
        device="cuda:1",
        dtype="bfloat16",
        quantize="8bit",
        attn="eager",
        trust_remote_code=True,
        local_files_only=True,
    )


def test_options_left_out_keep_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    got = _model_config(monkeypatch, [])
    assert got == ModelConfig()
    assert got.model == DEFAULT_MODEL and got.local_files_only is None
