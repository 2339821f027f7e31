#!/usr/bin/env bash
# The checks that need a GPU, in one script sized for a lent machine's device time (about
# 10 minutes on one H100/H200; each step has its own time limit). Run from anywhere, with
# the project installed (pip install -e ".[test]"); everything goes to $OUT (default
# bench_out/gpu_check) and the figures to BENCHMARKS.md by hand.
#
#   bash benchmarks/gpu_check.sh                # on a CUDA machine
#   bash benchmarks/gpu_check.sh --cpu-dry-run  # every step on the CPU, tiny shapes: checks
#                                               # the script itself, gives no figures
#
# 1. versions and what framepipe chooses on this device (dtype from the device's own compute
#    capability, FlashAttention 2 only on sm80+ in half precision);
# 2. the generator on the device: weights loaded onto it, float32 answers equal at batch
#    sizes 1 to 8, how many bfloat16 answers change with the batch, pixel values prepared in
#    a decoding process equal to the generator's own, images encoded in pieces and plain
#    model.generate giving the same answers;
# 3. bench_generate.py: framepipe's generator against the model card's way (real shapes);
# 4. bench_backends.py: in process against transformers serve --continuous-batching at
#    concurrency 1, 4 and 16.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
[[ "${1:-}" == "--cpu-dry-run" ]] && dry=1
out=${OUT:-bench_out/gpu_check}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if ((dry)); then
    dev=cpu dtype=float32 model=tiny
    gen_args=(--frames 2 --clips 1 --card-clips 1 --new-tokens 4 --skip ceiling)
    back_args=(--clips 8 --frames 2 --new-tokens 4 --concurrency 1,4,16)
else
    dev=cuda dtype=bfloat16 model=real
    nvidia-smi | tee "$out/0-nvidia-smi.txt"
    gen_args=(--frames 8 --clips 16 --card-clips 4 --batch-size 8 --new-tokens 32)
    back_args=(--clips 64 --frames 8 --new-tokens 32 --concurrency 1,4,16)
fi

echo "== 1. versions and device choices"
timeout 120 python - "$dev" <<'PY' | tee "$out/1-device.txt"
import sys

import torch
import transformers

from framepipe.generate import ModelConfig, resolve_runtime

dev = sys.argv[1]
rt = resolve_runtime(ModelConfig(device=dev))
print(f"torch {torch.__version__}, transformers {transformers.__version__}: {rt}")
if dev == "cuda":
    cap = torch.cuda.get_device_capability(rt.device)
    print(f"{torch.cuda.get_device_name(rt.device)}, compute capability {cap}")
    assert (rt.dtype == torch.bfloat16) == (cap >= (8, 0)), rt
PY

echo "== 2. the generator on the device"
timeout 600 python - "$dev" "$out" <<'PY' | tee "$out/2-generator.txt"
import sys
from pathlib import Path

import numpy as np

from framepipe.generate import GenerationSettings, Generator, ModelConfig, Request, make_tiny_model
from framepipe.generate.spec import PixelValues

dev, out = sys.argv[1], Path(sys.argv[2])
tiny = out / "tiny"
if not (tiny / "config.json").is_file():
    make_tiny_model(tiny)
rng = np.random.default_rng(0)
qs = ["What are these?", "Describe what happens in the video in detail."]
reqs = [
    Request([rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(1 + k % 4)], qs[: 1 + k % 2])
    for k in range(12)
]


def answers(dtype: str, batch: int, **kw: object) -> list[list[str]]:
    g = Generator.load(ModelConfig(model=str(tiny), device=dev, dtype=dtype), GenerationSettings(8, batch_size=batch))
    for k, v in kw.items():
        setattr(g, k, v)
    assert all(p.device.type == dev for p in g.model.parameters()), "weights not on the device"
    return [a.answers for a in g.answer(reqs)]


ref = answers("float32", 1)
for b in (2, 4, 8):
    assert answers("float32", b) == ref, f"float32 answers changed at batch size {b}"
print("float32: the same answers at batch sizes 1, 2, 4, 8")
assert answers("float32", 4, image_batch=1) == ref, "images encoded one at a time changed answers"
assert answers("float32", 4, fast=False) == ref, "plain model.generate changed answers"
print("float32: the same answers with images encoded one at a time and with plain generate")
g = Generator.load(ModelConfig(model=str(tiny), device=dev, dtype="float32"), GenerationSettings(8))
prepared = [Request(PixelValues(g.spec)(r.images), r.questions) for r in reqs]
assert [a.answers for a in g.answer(prepared)] == ref, "prepared pixel values changed answers"
print("float32: the same answers from pixel values prepared apart")
if dev == "cuda":
    one, eight = answers("bfloat16", 1), answers("bfloat16", 8)
    diff = sum(a != b for a, b in zip(one, eight))
    print(f"bfloat16: {diff} of {len(one)} clips answered differently at batch size 8 than 1")
PY

echo "== 3. bench_generate.py"
gen_model=()
((dry)) && gen_model=(--model "$out/tiny")
timeout 900 python benchmarks/bench_generate.py --device "$dev" "${gen_model[@]}" "${gen_args[@]}" \
    | tee "$out/3-bench_generate.md"

echo "== 4. bench_backends.py (transformers serve --continuous-batching)"
timeout 900 python benchmarks/bench_backends.py --model "$model" --device "$dev" --dtype "$dtype" \
    --continuous-batching "${back_args[@]}" | tee "$out/4-bench_backends.md"
echo "== done: $out"
