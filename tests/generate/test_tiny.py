"""The tiny random-weight model: deterministic, same tokens and template as llava-interleave,
labelled as random, loadable through the ordinary path, and the make-tiny-model command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.errors import ConfigError
from framepipe.generate import ModelConfig, ModelSpec, is_random, make_tiny_model
from framepipe.generate.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS


def _digest(folder: Path, name: str) -> str:
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_same_seed_same_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = make_tiny_model(tmp_path / "again")
    other = make_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again, name) == _digest(tiny_model_dir, name), name
    assert _digest(other, "model.safetensors") != _digest(again, "model.safetensors")


def test_marked_as_random_weights(tiny_model_dir: Path) -> None:
    assert is_random(tiny_model_dir)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["framepipe_random_weights"] is True
    assert "RANDOM WEIGHTS" in (tiny_model_dir / "README.md").read_text()
    assert list(tiny_model_dir.glob("*.safetensors"))
    assert not list(tiny_model_dir.glob("*.bin"))


def test_structure_tokens_and_template(tiny_model_dir: Path) -> None:
    spec = ModelSpec.inspect(ModelConfig(model=str(tiny_model_dir)))
    cfg = spec.config
    assert cfg.model_type == "llava"
    assert cfg.vision_config.model_type == "siglip_vision_model"
    assert cfg.text_config.model_type == "qwen2"
    assert cfg.vision_feature_select_strategy == "full"
    tok = spec.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    # the real model's order: <|endoftext|> < <|im_start|> < <|im_end|> < <image>, consecutive
    assert ids == list(range(ids[0], ids[0] + 4))
    assert tok.pad_token == "<|endoftext|>"
    assert tok.eos_token == "<|im_end|>"
    assert cfg.image_token_id == ids[3]
    assert spec.processor.chat_template == CHAT_TEMPLATE
    # each special token is one token, never split by the BPE
    text = "<|im_start|>user\n<image><image>\nhi<|im_end|>"
    toks = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    assert toks.count("<image>") == 2 and toks[0] == "<|im_start|>" and toks[-1] == "<|im_end|>"
    assert spec.random_weights
    assert spec.tokens_per_image == 16


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        make_tiny_model(tmp_path)


def test_cli_make_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    res = CliRunner().invoke(cli, ["make-tiny-model", str(out), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "random-weight" in res.output
    assert is_random(out)
    assert json.loads((out / "config.json").read_text())["framepipe_tiny_seed"] == 3
    res = CliRunner().invoke(cli, ["make-tiny-model", str(out)])
    assert res.exit_code != 0 and "already there" in res.output
    res = CliRunner().invoke(cli, ["make-tiny-model", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
