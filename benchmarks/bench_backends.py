"""Generation backends: clips/s with the model in this process against through an
OpenAI-compatible server, in one run.

    python benchmarks/bench_backends.py [--model tiny|real|DIR] [--clips 64] [--frames 4]
        [--new-tokens 16] [--device cpu] [--dtype float32] [--continuous-batching]
        [--concurrency 1,4,16]

``caption`` on CLIPS synthetic videos (n=FRAMES, one question, greedy) first with the model
in this process (``--backend transformers``, batch size BATCH), then with ``--backend
openai`` against ``transformers serve`` of the same model, started here on 127.0.0.1, at
each concurrency. clips/s is counted from the model loaded to the last record (the
summary's ``clips_per_s``; it includes starting the decoding processes, which import
transformers to run the image processor there for the in-process backend); the in-process
run is repeated last, to show the noise of a shared machine. The answers of every later run
are compared with the first one's (equal expected in float32). ``--model``: the tiny random
model (default), ``real``: the random real-shape model ``bench_generate.py`` caches in
``.bench_cache/``, or a folder. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def model_dir(name: str) -> Path:
    if name == "real":
        from bench_generate import real_shape_model

        return real_shape_model(ROOT / ".bench_cache")
    if name != "tiny":
        return Path(name)
    from framepipe.generate import make_tiny_model

    out = ROOT / ".bench_cache" / "backends-tiny"
    return out if (out / "config.json").is_file() else make_tiny_model(out)


def run(videos: Path, frames: int, **kw: Any) -> tuple[float, dict[str, Any]]:
    """Clips/s after the model loaded, and the answers by clip."""
    from framepipe import SampleConfig, caption

    s = caption([videos], None, sample=SampleConfig(n=frames), questions=["Describe it."], **kw)
    assert s.done == len(s.records) and not s.failed, s.failed
    return s.clips_per_s, {
        f"{r.source}#{(r.clip or {}).get('index')}": r.answers for r in s.records
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--continuous-batching", action="store_true")
    ap.add_argument("--concurrency", default="1,4,16")
    args = ap.parse_args()

    import engine_plugins
    from remote_servers import transformers_serve

    from framepipe.generate import GenerationSettings, ModelConfig, OpenAIBackend

    w, h = (int(x) for x in args.size.split("x"))
    videos = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    for k in range(args.clips):
        engine_plugins.make_video(videos / f"v{k}.mp4", 60, size=(w, h), seed=k)
    model = model_dir(args.model)
    settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.batch_size)
    cfg = ModelConfig(model=str(model), device=args.device, dtype=args.dtype)
    rows: list[tuple[str, str, float, str]] = []
    in_process = {"model": cfg, "settings": settings, "workers": 2}
    rate, ref = run(videos, args.frames, **in_process)
    rows.append(("transformers (in process)", f"batch {args.batch_size}", rate, "-"))
    extra = ("--continuous-batching",) if args.continuous_batching else ()
    log = videos / "serve.log"
    serve = transformers_serve(
        model, log, device=args.device, dtype=args.dtype, extra=extra, threads=None
    )
    with serve as server:
        for k in (int(x) for x in args.concurrency.split(",")):
            backend = OpenAIBackend(server.url, settings=settings, max_concurrency=k)
            got, answers = run(videos, args.frames, backend=backend, workers=2)
            same = sum(answers[c] == a for c, a in ref.items())
            rows.append(
                ("openai (transformers serve)", f"concurrency {k}", got, f"{same}/{len(ref)}")
            )
    rate, again = run(videos, args.frames, **in_process)  # again, after: the noise
    same = sum(again[c] == a for c, a in ref.items())
    rows.append(
        ("transformers (in process), again", f"batch {args.batch_size}", rate, f"{same}/{len(ref)}")
    )
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; model {model}; ")
    print(
        f"{args.clips} clips of {w}x{h}, n={args.frames}, {args.new_tokens} new tokens, "
        f"{args.device} {args.dtype}{', server with continuous batching' if extra else ''}\n"
    )
    print("| backend | requests together | clips/s | vs in process | answers equal |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, how, r, same in rows:
        print(f"| {name} | {how} | {r:.2f} | {r / rows[0][2]:.2f}x | {same} |")


if __name__ == "__main__":
    main()
