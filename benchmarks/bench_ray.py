"""The Ray engine against the local engine, and the read stage's scaling with its actors.

    python benchmarks/bench_ray.py [--address ADDR] [--videos 12] [--actors 1,2,4]
                                   [--model DIR] [--no-caption]

(a) ``sample`` (plan, select, decode, save frames; no model) of VIDEOS synthetic videos
    (60 frames of 320x240 each, clips of 0.5 s: 4 clips a video, n=4): clips/s of the local
    engine (2 worker processes) against ``engine="ray"`` (read actors as the cluster allows).
(b) ``caption`` of the same clips with ``--model`` (default: the tiny random model, built in
    a temporary folder): local engine against Ray (read actors + generation actors: one per
    GPU on a GPU cluster, one CPU actor here).
(c) The read stage's scaling: ``sample`` on Ray with 1, 2, 4 read actors (``--actors``);
    counts the cluster cannot place are reported as skipped, not run.

Ray is joined (``--address``, or ``RAY_ADDRESS``) or started once before timing, and one
untimed run of one video pays Ray's cold worker start; every figure then still includes its
stage actors' start (a fresh pool per run, each read actor starting its decoder process).
Ratios are measured in one run (the machine may be shared). The same script runs unchanged
on a cluster: the inputs are written under ``--workdir``, which must then be on storage
every node reads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _videos(folder: Path, count: int) -> Path:
    import engine_plugins

    for k in range(count):
        engine_plugins.make_video(folder / f"v{k:03d}.mp4", 60, size=(320, 240), seed=k)
    return folder


HEAD = (
    "| clips | s | clips/s | vs local | first record s | steady clips/s |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)
STAMPS: list[float] = []
"""When each record of the current run arrived (perf_counter)."""


def _stamp(_rec: Any) -> None:
    STAMPS.append(time.perf_counter())


def _sample(src: Path, out: Path, **kw: Any) -> tuple[float, int]:
    from framepipe.config import SampleConfig
    from framepipe.runs.sample import sample

    cfg = SampleConfig(n=4, clip_seconds=0.5)
    STAMPS.clear()
    t = time.perf_counter()
    STAMPS.append(t)
    s = sample([src], out, cfg, overwrite=True, keep_records=False, on_record=_stamp, **kw)
    dt = time.perf_counter() - t
    assert s.ok, s.failed[:3]
    return dt, s.done


def _caption(src: Path, out: Path, model: str, **kw: Any) -> tuple[float, int]:
    from framepipe.config import SampleConfig
    from framepipe.generate import GenerationSettings
    from framepipe.runs.caption import caption

    STAMPS.clear()
    t = time.perf_counter()
    STAMPS.append(t)
    s = caption(
        [src],
        out,
        model=model,
        settings=GenerationSettings(max_new_tokens=8, batch_size=4),
        sample=SampleConfig(n=4, clip_seconds=0.5),
        questions=["What happens?"],
        overwrite=True,
        keep_records=False,
        on_record=_stamp,
        **kw,
    )
    dt = time.perf_counter() - t
    assert s.ok, s.failed[:3]
    return dt, s.done


def _row(name: str, dt: float, clips: int, base: float | None = None) -> str:
    """A table row; "steady" is the rate from the first record to the last (what start-up,
    model loading and the first decode cost is left out)."""
    ratio = f"{(clips / dt) / base:.2f}x" if base else "1.00x"
    first = STAMPS[1] - STAMPS[0] if len(STAMPS) > 1 else float("nan")
    span = STAMPS[-1] - STAMPS[1] if len(STAMPS) > 2 else 0.0
    steady = f"{(len(STAMPS) - 2) / span:.2f}" if span > 0 else "-"
    return f"| {name} | {clips} | {dt:.1f} | {clips / dt:.2f} | {ratio} | {first:.1f} | {steady} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", default=None, help="Ray cluster (default: RAY_ADDRESS/local)")
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--actors", default="1,2,4", help="read actor counts for (c)")
    ap.add_argument("--model", default=None, help="model folder for (b) (default: tiny)")
    ap.add_argument("--no-caption", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    from framepipe.engine.ray import RayOptions, connect

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ray_"))
    src = _videos(work / "videos", args.videos)
    t = time.perf_counter()
    ray = connect(args.address)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    print(
        f"Ray up in {time.perf_counter() - t:.1f} s: {cpus} CPUs, {gpus} GPUs; "
        f"this machine has {os.cpu_count()} cores\n"
    )
    addr = RayOptions(address=args.address)
    # the first stage actors of a fresh Ray pay its workers' cold start: shown, not counted
    one = _videos(work / "warm", 1)
    dt, _ = _sample(one, work / "s_warm", engine="ray", ray_options=addr)
    print(f"first Ray run (1 video, cold worker start): {dt:.1f} s\n")

    print(f"| sample (a) {HEAD}")
    dt, n = _sample(src, work / "s_local", workers=2)
    base = n / dt
    print(_row("local engine, 2 workers", dt, n))
    dt, n = _sample(src, work / "s_ray", engine="ray", ray_options=addr)
    print(_row(f"ray, {cpus} read actor(s)", dt, n, base))

    if not args.no_caption:
        model = args.model
        if model is None:
            from framepipe.generate import make_tiny_model

            model = str(make_tiny_model(work / "tiny"))
        print(f"\n| caption (b) {HEAD}")
        dt, n = _caption(src, work / "c_local.jsonl", model, workers=2)
        base_c = n / dt
        print(_row("local engine, 2 workers", dt, n))
        dt, n = _caption(src, work / "c_ray.jsonl", model, engine="ray", ray_options=addr)
        print(_row("ray (read + generation actors)", dt, n, base_c))

    print(f"\n| read stage (c) {HEAD.replace('vs local', 'vs 1 actor')}")
    one: float | None = None
    for k in (int(x) for x in args.actors.split(",")):
        if k > cpus:
            print(f"| {k} read actor(s) | - | - | - | skipped: the cluster has {cpus} CPUs |")
            continue
        opts = RayOptions(address=args.address, decode_actors=k)
        dt, n = _sample(src, work / f"s_ray{k}", engine="ray", ray_options=opts)
        print(_row(f"{k} read actor(s)", dt, n, one))
        one = one or n / dt
    print(f"\ninputs and outputs in {work}")


if __name__ == "__main__":
    main()
