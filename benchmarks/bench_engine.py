"""The local engine: how frames travel between processes, and whether decoding overlaps
generation.

    python benchmarks/bench_engine.py [--model DIR] [--clips 8] [--size 1280x720]

(a) Frame transfer from a worker process: 8 frames of 1080p per clip sent through shared
    memory (what the engine does) against pickling the arrays through the pipe.
(b) Overlap: ``caption`` on CLIPS synthetic videos, n=8, with decoding in the main process
    (``workers=0``: decode and generate one after the other) against the engine's worker
    processes (``workers=2``). The target, on a GPU, is end-to-end time (from the model
    loaded to the last record) <= 1.15 x the larger of the total decode time and the total
    generate time. ``--model`` takes any local model folder (default: the tiny random model,
    built in a temporary folder; on a GPU use the real-shape model that
    ``bench_generate.py`` caches in ``.bench_cache/``).

Prints markdown tables; ratios are measured in the same run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


# -- (a) transfer ----------------------------------------------------------------------------
def _sender(conn: Any, mode: str, count: int) -> None:
    from framepipe.engine.transfer import pack_frames
    from framepipe.types import FrameBatch

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, 1080, 1920, 3), dtype=np.uint8)
    batch = FrameBatch(frames, tuple(range(8)))
    for _ in range(count):
        conn.recv()
        if mode == "pickle":
            conn.send(("job", batch, None))
        else:
            shell, packed = pack_frames(batch)
            conn.send(("job", shell, packed))


def bench_transfer(count: int = 10) -> dict[str, float]:
    from framepipe.engine.transfer import unpack_frames

    ctx = mp.get_context("spawn")
    out = {}
    for mode in ("pickle", "shm"):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_sender, args=(b, mode, count + 1))
        p.start()
        t0 = 0.0
        for k in range(count + 1):  # the first one is a warm-up
            if k == 1:
                t0 = time.perf_counter()
            a.send("go")
            _, shell, packed = a.recv()
            batch = unpack_frames(shell, packed) if packed is not None else shell
            assert batch.frames.shape == (8, 1080, 1920, 3)
        out[mode] = (time.perf_counter() - t0) / count
        p.join()
    return out


# -- (b) overlap -----------------------------------------------------------------------------
def bench_overlap(
    model_dir: Path, clips: int, size: tuple[int, int], device: str, batch_size: int
) -> list[dict[str, Any]]:
    import engine_plugins

    from framepipe import Pipeline, SampleConfig
    from framepipe.generate import GenerationSettings, ModelConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    for k in range(clips):
        engine_plugins.make_video(tmp / f"v{k}.mp4", 240, size=size, seed=k)
    cfg = ModelConfig(model=str(model_dir), device=device)
    settings = GenerationSettings(max_new_tokens=32, batch_size=batch_size)
    rows = []
    for workers in (0, 2, 0, 2):  # twice each, interleaved, to see the noise
        # A fresh pipeline each time, as a user runs it: it loads the model (the workers
        # start and decode the first clips meanwhile); loading is not counted below.
        pipe = Pipeline(
            cfg,
            settings,
            sample=SampleConfig(n=8),
            questions=["Describe the video."],
            workers=workers,
        )
        s = pipe.run([tmp], None)
        assert s.done == clips, s.failed
        wall = s.elapsed_s - s.load_s
        decode = sum(
            r.timings_s.get("open_s", 0) + r.timings_s.get("select_s", 0) + r.timings_s["decode_s"]
            for r in s.records
        )
        rows.append(
            {
                "workers": workers,
                "wall_s": wall,
                "decode_s": decode,
                "generate_s": s.generate_s,
                "ratio": wall / max(decode, s.generate_s),
                "device": (s.model or {}).get("device"),
                "dtype": (s.model or {}).get("dtype"),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))

    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n")
    t = bench_transfer()
    print("## (a) frame transfer, 8 x 1080p RGB per clip (49.8 MB)\n")
    print("| method | ms per clip | GB/s |\n| --- | ---: | ---: |")
    for mode, dt in t.items():
        print(f"| {mode} | {dt * 1000:.1f} | {8 * 1080 * 1920 * 3 / dt / 1e9:.2f} |")
    print(f"\nshared memory is {t['pickle'] / t['shm']:.2f}x faster than pickling\n")

    model_dir = args.model
    if model_dir is None:
        from framepipe.generate import make_tiny_model

        model_dir = make_tiny_model(Path(tempfile.mkdtemp(prefix="tiny_")) / "tiny")
    rows = bench_overlap(model_dir, args.clips, (w, h), args.device, args.batch_size)
    print(f"## (b) overlap: {args.clips} clips of {w}x{h}, n=8, model {model_dir}\n")
    print(
        "| workers | device | dtype | end to end s | decode s (sum) | generate s (sum) "
        "| end to end / max(decode, generate) |"  # end to end: after the model loaded
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['workers']} | {r['device']} | {r['dtype']} | {r['wall_s']:.2f} | "
            f"{r['decode_s']:.2f} | {r['generate_s']:.2f} | {r['ratio']:.2f} |"
        )
    serial = min(r["wall_s"] for r in rows if r["workers"] == 0)
    overlapped = min(r["wall_s"] for r in rows if r["workers"] == 2)
    print(f"\nworkers=2 vs workers=0 (best of two each): {serial / overlapped:.2f}x faster")


if __name__ == "__main__":
    main()
