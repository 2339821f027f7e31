"""A tiny random-weight LLaVA of the same structure as llava-interleave, built locally.

``make_tiny_model(dir)`` writes a ``LlavaForConditionalGeneration`` (SigLIP vision tower,
Qwen2 text model of a few layers), a byte-level BPE tokenizer trained on a few sentences with
the same special tokens (``<|endoftext|>`` as pad, ``<|im_start|>``, ``<|im_end|>`` as end of
turn, ``<image>``), the same chat template as llava-interleave, and a ``LlavaProcessor``, all
with ``save_pretrained``, so the ordinary loading path reads it. The token ids differ from
the real model's on purpose: code that hard-codes 151646 fails on it.

Its config carries ``framepipe_random_weights: true`` and the folder a README that says so;
the generator reports ``random_weights`` in every record made with it. Its answers are noise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from framepipe.errors import AlreadyThereError, ConfigError
from framepipe.generate.config import RANDOM_WEIGHTS_KEY

log = logging.getLogger(__name__)

# The llava-interleave chat template: per message, the role header, every image item of the
# message (in order), then every text item after a newline, then the end of turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}"
    "{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}"
    "{% endfor %}"
    "{{'<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>")

# What the byte-level BPE learns its merges from: enough English for short, realistic tokens.
_CORPUS = (
    "These images are frames of one video, in order. Describe what happens in the video.",
    "These images are views of one scene taken from different viewpoints.",
    "These images are renders of one 3D object seen from different viewpoints.",
    "Describe the scene: its layout, the objects in it and where they are.",
    "Describe the object: what it is, its shape, colours, materials and parts.",
    "What are these? What is shown in this image? What color is the car?",
    "A person walks across the street while a dog runs behind them in the park.",
    "The camera pans to the left and shows a red car parked next to a tall building.",
    "There is a table with a cup, a book and a lamp on it. The room is bright.",
    "Answer the question in one word. How many people are there? Is it day or night?",
    "You are a helpful assistant. Video 1: Video 2: Reference image: Image 1: Image 2:",
)


def make_tiny_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 56,
    patch_size: int = 14,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 384,
    max_position_embeddings: int = 4096,
    overwrite: bool = False,
    text_overrides: Mapping[str, Any] | None = None,
    vision_overrides: Mapping[str, Any] | None = None,
    save_dtype: str = "float32",
) -> Path:
    """Build the tiny model and processor and save both to ``out_dir``; returns the path.

    ``image_size / patch_size`` squared is the tokens per image (16 by default, so prompts of
    many frames stay cheap). The same seed gives the same weights and tokenizer.

    ``text_overrides`` / ``vision_overrides`` replace entries of the Qwen2 / SigLIP configs
    (the benchmark uses them to build a random model of the real model's shapes, saved in
    ``save_dtype``); a ``vision_overrides["image_size"]`` also sizes the processor.
    """
    import torch
    from transformers import (
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    out = Path(out_dir)
    vision_kw: dict[str, Any] = dict(vision_overrides or {})
    image_size = int(vision_kw.pop("image_size", image_size))
    patch_size = int(vision_kw.pop("patch_size", patch_size))
    if image_size < patch_size:
        raise ConfigError(f"image_size ({image_size}) must be >= patch_size ({patch_size})")
    if out.exists() and any(out.iterdir()) and not overwrite:
        if (out / "config.json").is_file() and is_random(out):
            raise AlreadyThereError(out, "a tiny model")
        raise ConfigError(f"{out}: the folder is not empty")
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer(vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = max(2, hidden_size // 16)
    text_kw: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": max_position_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "tie_word_embeddings": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        **(text_overrides or {}),
    }
    if text_kw["vocab_size"] < len(tokenizer):
        raise ConfigError(
            f"vocab_size ({text_kw['vocab_size']}) < the tokenizer's {len(tokenizer)}"
        )
    text_config = Qwen2Config(**text_kw)
    vision_config = SiglipVisionConfig(
        **{
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": heads,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
            "vision_use_head": False,
            **vision_kw,
            "image_size": image_size,
            "patch_size": patch_size,
        }
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=ids["<image>"],
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
        image_seq_length=(image_size // patch_size) ** 2,
    )
    setattr(config, RANDOM_WEIGHTS_KEY, True)
    config.framepipe_tiny_seed = seed

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    _spread_weights(model, seed)
    model.to(getattr(torch, save_dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    from framepipe.generate.hub import quiet_hf

    with quiet_hf():
        model.save_pretrained(out)

    processor = LlavaProcessor(
        image_processor=_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=0,
    )
    processor.save_pretrained(out)
    (out / "README.md").write_text(
        "# framepipe tiny model: RANDOM WEIGHTS\n\n"
        "Built by `framepipe make-tiny-model` (seed "
        f"{seed}) for tests and offline smoke runs. Same structure as "
        "llava-hf/llava-interleave-qwen-0.5b-hf (LLaVA, SigLIP vision tower, Qwen2 text "
        "model, chat template), tiny sizes, random weights: its answers are noise.\n",
        encoding="utf-8",
    )
    log.info("wrote a tiny random-weight model to %s", out)
    return out


def is_random(model_dir: str | Path) -> bool:
    """Whether ``model_dir/config.json`` carries framepipe's random-weights marker."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(cfg.get(RANDOM_WEIGHTS_KEY, False))


def _build_tokenizer(vocab_size: int) -> Any:
    """A Qwen2-style byte-level BPE (same pre-tokenizer) trained on a few local sentences."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    trainee = Tokenizer(models.BPE())
    trainee.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainee.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trainee.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    model = json.loads(trainee.to_str())["model"]
    merges: Any = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab = dict(model["vocab"])
    for t in SPECIAL_TOKENS:  # after the BPE vocabulary, in the real model's order
        vocab[t] = len(vocab)
    kwargs: dict[str, Any] = {"unk_token": None, "model_max_length": 32768, "padding_side": "left"}
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>", **kwargs
    )
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS
            ]
        }
    )
    return tok


def _image_processor(image_size: int) -> Any:
    """SigLIP preprocessing (resize, rescale 1/255, normalize 0.5/0.5) at the tiny size,
    through the PIL backend (torchvision is optional)."""
    from transformers import SiglipImageProcessorPil

    return SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _spread_weights(model: Any, seed: int) -> None:
    """Re-draw the weights with a larger spread than the default init, so that the random
    model's next-token logits have clear winners (stable greedy answers)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                std = 1.0 / max(1, p.shape[-1]) ** 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * std * 2.0)
            elif "norm" in name or "layernorm" in name:
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
            else:
                p.zero_()
