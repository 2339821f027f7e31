#!/usr/bin/env bash
# The main job on the bundled samples: n well-chosen frames per clip, then one answer per
# clip from the model. Usage: bash samples/demo.sh [OUT_DIR]   (default: out)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-out}
inputs=("$here/shots.mp4" "$here/scene_cubes" "$here/torus_knot.ply")
model=${FRAMEPIPE_MODEL:-llava-hf/llava-interleave-qwen-0.5b-hf}

echo "== framepipe info"
framepipe info "${inputs[@]}"

echo "== framepipe sample: 8 frames per clip -> $out/frames"
framepipe sample "${inputs[@]}" -n 8 -o "$out/frames"

echo "== framepipe caption with $model -> $out/captions.jsonl"
model_available() {
  python - "$1" <<'PY'
import sys
from framepipe.errors import FramepipeError
from framepipe.generate import ModelConfig, ModelSpec
try:
    ModelSpec.inspect(ModelConfig(model=sys.argv[1]))
except FramepipeError as exc:
    print(f"note: {exc}")
    sys.exit(1)
PY
}

if model_available "$model"; then
  framepipe caption "${inputs[@]}" -n 8 --model "$model" -o "$out/captions.jsonl" \
    --frames-dir "$out/caption-frames"
  captions="$out/captions.jsonl"
else
  echo "The weights of $model are not on this machine and the hub cannot be reached."
  echo "Running the same job with a tiny RANDOM-WEIGHT model built locally instead: its answers"
  echo "are noise, and every record says random_weights: true."
  if [ ! -f "$out/tiny-random-model/config.json" ]; then  # a second run reuses it
    framepipe make-tiny-model "$out/tiny-random-model"
  fi
  framepipe caption "${inputs[@]}" -n 8 --model "$out/tiny-random-model" \
    -o "$out/captions-random-weights.jsonl" --frames-dir "$out/caption-frames"
  captions="$out/captions-random-weights.jsonl"
fi

echo "== framepipe report: the frames beside each answer -> $out/report.html"
framepipe report "$captions" -o "$out/report.html"  # one card per clip
