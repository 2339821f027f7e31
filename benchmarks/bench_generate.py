"""Generation speed: framepipe's generator against the model card's way, on a random-weight
model with the real shapes of llava-interleave-qwen-0.5b (shared/MODEL_FACTS.md).

The model (about 0.9 B parameters: SigLIP so400m tower, 24-layer Qwen2 text model, 152,000
vocabulary) is built once with random weights and cached in ``.bench_cache/`` (gitignored,
1.8 GB in bfloat16). Its tokenizer is framepipe's small local one, so a question is a few
more tokens than with the real Qwen tokenizer; the 8 x 729 image tokens dominate either way.
Every answer is forced to exactly ``--new-tokens`` tokens (random weights would stop at
random points), the same for both ways.

Measured in one run, on 8-frame clips:

(b) one clip with 5 questions against the same clip with 1 question (32 new tokens per
    answer): the prefix of frames is encoded once, so the ratio should stay <= 1.5;
(a) the model card's way - one clip at a time, processor then ``generate``, float32 on CPU
    (float16 on a GPU) - against framepipe's defaults (dtype auto, batching, SDPA or
    FlashAttention): clips per second, and the ratio. framepipe's model is freed before the
    card's float32 copy is loaded, so the peak memory is one model.

    python benchmarks/bench_generate.py               # CPU: a few clips, ~10 minutes
    python benchmarks/bench_generate.py --clips 16 --card-clips 4 --batch-size 8   # a GPU

Prints markdown tables; the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framepipe.generate import (  # noqa: E402
    GenerationSettings,
    Generator,
    ModelConfig,
    Request,
    make_tiny_model,
)
from framepipe.utils import stable_digest  # noqa: E402

# llava-interleave-qwen-0.5b-hf, from shared/MODEL_FACTS.md
REAL_TEXT: dict[str, Any] = {
    "vocab_size": 152000,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "max_position_embeddings": 32768,
}
REAL_VISION: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
}
QUESTION = "These images are frames of one video, in order. Describe what happens in the video."
QUESTIONS5 = [
    QUESTION,
    "What objects are visible?",
    "Where does the scene take place?",
    "How many people are there?",
    "What is the main colour of the scene?",
]


class FixedLengthGenerator(Generator):
    """framepipe's generator with every answer forced to max_new_tokens tokens."""

    def _generation_config(self) -> Any:
        gc_ = super()._generation_config()
        gc_.min_new_tokens = gc_.max_new_tokens
        return gc_


def real_shape_model(cache: Path) -> Path:
    out = cache / f"llava-real-shapes-{stable_digest([REAL_TEXT, REAL_VISION], 8)}"
    if (out / "model.safetensors").is_file() or (out / "model.safetensors.index.json").is_file():
        return out
    t0 = time.perf_counter()
    print(f"building the random real-shape model in {out} ...", file=sys.stderr)
    make_tiny_model(
        out,
        seed=0,
        text_overrides=REAL_TEXT,
        vision_overrides=REAL_VISION,
        save_dtype="bfloat16",
        overwrite=True,
    )
    print(f"built in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return out


def make_clips(n_clips: int, n_frames: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Video-sized random frames (360 x 640): the processor's resize is part of the cost."""
    rng = np.random.default_rng(seed)
    return [
        [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(n_frames)]
        for _ in range(n_clips)
    ]


def card_way(
    model_dir: Path, clips: list[list[np.ndarray]], new_tokens: int, device: str
) -> dict[str, Any]:
    """The model card's recipe: processor, then generate, one clip at a time; float32 on
    CPU, float16 on a GPU."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).to(device)
    model.eval()
    n = len(clips[0])
    conversation = [
        {
            "role": "user",
            "content": [{"type": "image"}] * n + [{"type": "text", "text": QUESTION}],
        }
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)

    def one(clip: list[np.ndarray], max_new: int) -> None:
        inputs = processor(images=clip, text=prompt, return_tensors="pt").to(device, dtype)
        out = model.generate(
            **inputs, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False
        )
        processor.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    with torch.inference_mode():
        one(clips[0][:1] * n, 2)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for clip in clips:
            one(clip, new_tokens)
        _sync(device)
        dt = time.perf_counter() - t0
    return {"dtype": str(dtype).removeprefix("torch."), "clips": len(clips), "s": dt}


def framepipe_way(
    gen: Generator, clips: list[list[np.ndarray]], questions: list[str]
) -> dict[str, Any]:
    dev = str(gen.runtime.device)
    _sync(dev)
    t0 = time.perf_counter()
    answers = gen.answer([Request(c, questions) for c in clips])
    _sync(dev)
    dt = time.perf_counter() - t0
    tokens = {t for a in answers for t in a.new_tokens}
    return {"dtype": gen.runtime.dtype_name, "clips": len(clips), "s": dt, "new_tokens": tokens}


def _rate(fn: Any, flops: float, reps: int = 3) -> float:
    """FLOP/s of ``fn`` (best of ``reps`` after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best


def ceiling(n_frames: int, text_tokens: int, card_s: float | None) -> None:
    """What the hardware allows: the model's matmuls and attention at this machine's measured
    float32 and bfloat16 rates (same run), and the best clip-rate ratio bfloat16 can give over
    the card's float32 even if everything else (norms, activations, decoding steps, the
    processor) took no time at all."""
    import torch
    import torch.nn.functional as F

    v, t = REAL_VISION, REAL_TEXT
    img_tokens = (v["image_size"] // v["patch_size"]) ** 2
    vt = n_frames * img_tokens
    tt = vt + text_tokens
    vh, vi = v["hidden_size"], v["intermediate_size"]
    th, ti = t["hidden_size"], t["intermediate_size"]
    # dense layers: 2 FLOPs per multiply-add
    gemm_vision = 2 * vt * v["num_hidden_layers"] * (4 * vh * vh + 2 * vh * vi)
    projector = 2 * vt * (vh * th + th * th)
    gemm_text = 2 * tt * t["num_hidden_layers"] * (4 * th * th + 3 * th * ti)
    # attention: QK^T and PV, full per image in the tower, causal (half) in the text model
    attn_vision = 4 * n_frames * img_tokens**2 * vh * v["num_hidden_layers"]
    attn_text = 2 * tt**2 * th * t["num_hidden_layers"]
    gemm = gemm_vision + projector + gemm_text
    rows = []
    rates: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for dt in (torch.float32, torch.bfloat16):
            x = torch.randn(vt, vh, dtype=dt)
            w = torch.randn(vi, vh, dtype=dt)
            g = _rate(lambda x=x, w=w: F.linear(x, w), 2 * vt * vh * vi)
            hd = th // t["num_attention_heads"]
            q = torch.randn(1, t["num_attention_heads"], tt, hd, dtype=dt)
            a = _rate(
                lambda q=q: F.scaled_dot_product_attention(q, q, q, is_causal=True),
                2 * tt**2 * th,
                reps=2,
            )
            name = str(dt).removeprefix("torch.")
            rates[name] = {"gemm": g, "attn": a}
            rows.append((name, g, a, gemm / g + (attn_vision + attn_text) / a))
    print(
        f"(ceiling) one {n_frames}-frame clip is {gemm / 1e12:.1f} TFLOP of matmuls and "
        f"{(attn_vision + attn_text) / 1e12:.1f} TFLOP of attention; this machine's rates, "
        "measured now:\n"
    )
    print("| dtype | matmul GFLOP/s | causal attention GFLOP/s | matmuls + attention, s per clip |")
    print("|---|---:|---:|---:|")
    for name, g, a, s in rows:
        print(f"| {name} | {g / 1e9:.0f} | {a / 1e9:.0f} | {s:.1f} |")
    bf16_floor = rows[1][3]
    bf, fp = rates["bfloat16"], rates["float32"]
    print(
        f"\nbfloat16 / float32: matmul {bf['gemm'] / fp['gemm']:.2f}x, "
        f"attention {bf['attn'] / fp['attn']:.2f}x"
    )
    if card_s is not None:
        print(
            f"best possible ratio over the card's float32 here (card {card_s:.1f} s per clip, "
            f"bfloat16 floor {bf16_floor:.1f} s): **{card_s / bf16_floor:.2f}x**"
        )


def cache_fill(device: str, rows: int = 5, tokens: int = 8 * 729 + 40, reps: int = 3) -> None:
    """(fill) Starting each question's static cache from the prefilled prefix: framepipe's
    fill (straight into StaticLayer's buffers) against the public ``Cache.update`` of the
    gathered rows, for the real text model's shapes (24 layers, 16 heads of 64, bfloat16)."""
    import torch
    from transformers import Qwen2Config, StaticCache

    from framepipe.generate.batching import fill_static_layer

    shape = (2, 16, tokens, 64)
    layers = [(torch.randn(shape, dtype=torch.bfloat16, device=device),) * 2 for _ in range(24)]
    idx = torch.tensor([0] * (rows - 2) + [1, 1], device=device)
    text = Qwen2Config(**{**REAL_TEXT, "vocab_size": 16})
    seconds = {}
    for way in ("framepipe", "public update", "framepipe", "public update"):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            cache = StaticCache(config=text, max_cache_len=tokens + 64)
            for i, (k, v) in enumerate(layers):
                if way == "framepipe":
                    fill_static_layer(cache.layers[i], k, v, idx)
                else:
                    cache.update(k.index_select(0, idx), v.index_select(0, idx), i)
        _sync(device)
        seconds[way] = min(seconds.get(way, 1e9), (time.perf_counter() - t0) / reps)
    print(f"(fill) {rows} question rows from 2 prefixes of {tokens} tokens, 24 layers, {device}\n")
    print("| way | ms per fill | vs framepipe |\n|---|---:|---:|")
    for way, s_ in seconds.items():
        print(f"| {way} | {s_ * 1000:.0f} | {s_ / seconds['framepipe']:.2f}x |")
    print()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8, help="frames per clip")
    ap.add_argument("--clips", type=int, default=2, help="clips for framepipe's way")
    ap.add_argument("--card-clips", type=int, default=1, help="clips for the card's way")
    ap.add_argument("--new-tokens", type=int, default=16, help="new tokens per answer in (a)")
    ap.add_argument("--batch-size", type=int, default=4, help="framepipe's batch size")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench_cache")
    ap.add_argument("--model", type=Path, default=None, help="a model folder instead")
    ap.add_argument("--skip", choices=["a", "b", "ceiling", "fill"], action="append", default=[])
    args = ap.parse_args(argv)

    model_dir = args.model or real_shape_model(args.cache)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n"
    )
    settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.batch_size)
    gen = FixedLengthGenerator.load(ModelConfig(model=str(model_dir), device=args.device), settings)
    device = str(gen.runtime.device)
    n_params = sum(p.numel() for p in gen.model.parameters())
    print(
        f"model: {model_dir.name}, random weights, {n_params / 1e9:.2f} B parameters, "
        f"{gen.spec.tokens_per_image} tokens per image; framepipe: {gen.describe()['dtype']}, "
        f"attn {gen.runtime.attn}, batch size {args.batch_size}\n"
    )
    gen.answer([Request(make_clips(1, 1)[0], ["Hi?"])])  # warm-up

    if "fill" not in args.skip:
        cache_fill(device)
    if "b" not in args.skip:
        gen.settings = GenerationSettings(max_new_tokens=32, batch_size=max(5, args.batch_size))
        gen.batch_size = gen.settings.batch_size
        clip = make_clips(1, args.frames, seed=1)
        one = framepipe_way(gen, clip, QUESTIONS5[:1])
        five = framepipe_way(gen, clip, QUESTIONS5)
        print(f"(b) one {args.frames}-frame clip, 32 new tokens per answer, {device}\n")
        print("| questions | seconds | vs 1 question |")
        print("|---:|---:|---:|")
        print(f"| 1 | {one['s']:.1f} | 1.00x |")
        print(f"| 5 | {five['s']:.1f} | **{five['s'] / one['s']:.2f}x** |")
        print(f"\nnew tokens per answer: {sorted(five['new_tokens'])}")
    if "a" not in args.skip:
        clips = make_clips(max(args.clips, args.card_clips), args.frames)
        gen.settings = settings
        gen.batch_size = settings.batch_size
        fp = framepipe_way(gen, clips[: args.clips], [QUESTION])
    del gen  # the card's float32 copy needs the memory
    gc.collect()
    card_clip_s: float | None = None
    if "a" not in args.skip:
        card = card_way(model_dir, clips[: args.card_clips], args.new_tokens, device)
        card_rate = card["clips"] / card["s"]
        fp_rate = fp["clips"] / fp["s"]
        print(f"(a) {args.frames}-frame clips, {args.new_tokens} new tokens per answer, {device}\n")
        print("| way | dtype | clips | seconds | clips/s | vs card |")
        print("|---|---|---:|---:|---:|---:|")
        print(
            f"| model card (processor + generate, one clip at a time) | {card['dtype']} | "
            f"{card['clips']} | {card['s']:.1f} | {card_rate:.4f} | 1.00x |"
        )
        print(
            f"| framepipe defaults (batch {args.batch_size}) | {fp['dtype']} | {fp['clips']} | "
            f"{fp['s']:.1f} | {fp_rate:.4f} | **{fp_rate / card_rate:.2f}x** |"
        )
        print(f"\nnew tokens per answer (framepipe): {sorted(fp['new_tokens'])}\n")
        card_clip_s = card["s"] / card["clips"]
    if "ceiling" not in args.skip and device == "cpu":
        ceiling(args.frames, 40, card_clip_s)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
