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
(d) The driver's ceiling (``--driver-records N``, default 1,000,000; ``--driver-only`` runs
    only this): what the driver spends per record, on ``N`` small caption records made by
    Ray tasks: *receive* (Ray Data hands the stage's rows to the driver, which unpickles
    them), *write* (the run's writer appends each record: with an fsync per record, measured
    on the first 5,000, and with group commit, the writer's behaviour: an fsync at most every
    0.1 s), *bookkeeping* (the summary, the done keys, one ledger plan per 4 clips) and
    *resume* (a re-run opening the finished output: its done keys and ledger). The ceiling
    is 1 / (receive + write + bookkeeping) records/s, in GPUs at 40 clips/s each.

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


def _make_records(batch: dict[str, Any]) -> dict[str, Any]:
    """Ray task: a small caption record per id, pickled as the generation actors send them."""
    import pickle

    import numpy as np

    from framepipe.types import ClipResult

    out = []
    for i in batch["id"]:
        rec = ClipResult(
            source=f"s3://bucket/videos/{int(i) // 4:08d}.mp4",
            kind="video",
            clip={"index": int(i) % 4, "start_frame": 0, "end_frame": 60, "label": None},
            sampler={"name": "uniform", "params": {"n": 8}},
            indices=list(range(0, 64, 8)),
            timestamps_s=[k / 30 for k in range(0, 64, 8)],
            model={"id": "llava-hf/llava-interleave-qwen-0.5b-hf", "dtype": "bfloat16"},
            questions=["What happens?"],
            answers=["A person walks a dog along a beach at sunset."],
            timings_s={"decode_s": 0.05, "generate_s": 0.02},
            key=f"{int(i):016x}",
        )
        out.append(pickle.dumps(rec, protocol=5))
    return {"out": np.array(out, dtype=object)}


def _driver(ray: Any, n: int, work: Path) -> None:
    """(d): see the module's docstring."""
    import pickle

    import framepipe.utils
    from framepipe.output import open_writer
    from framepipe.records import InputPlan
    from framepipe.runs.common import RunSummary

    t = time.perf_counter()
    ds = ray.data.range(n).map_batches(_make_records, batch_size=4096).materialize()
    made = time.perf_counter() - t
    out = work / "driver.jsonl"
    every = framepipe.utils.SYNC_EVERY_S
    framepipe.utils.SYNC_EVERY_S = 0.0  # an fsync per record, as before group commit
    with open_writer(work / "driver_fsync.jsonl", overwrite=True) as w:
        first = ds.take_batch(5000, batch_format="numpy")["out"]
        t = time.perf_counter()
        for blob in first:
            w.write(pickle.loads(blob))
        per_fsync = (time.perf_counter() - t) / len(first)
    framepipe.utils.SYNC_EVERY_S = every
    summary = RunSummary()
    receive = write = keep = 0.0
    keys: list[str] = []
    clock = time.perf_counter
    with open_writer(out, overwrite=True) as w:
        t0 = clock()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for blob in batch["out"]:
                t1 = clock()
                rec = pickle.loads(blob)
                t2 = clock()
                w.write(rec)
                t3 = clock()
                summary.add(rec, keep=False)
                keys.append(rec.key)
                if len(keys) == 4:
                    w.plan(InputPlan(f"p{rec.key}", tuple(keys)))
                    keys.clear()
                t4 = clock()
                receive += t2 - t1
                write += t3 - t2
                keep += t4 - t3
        receive += clock() - t0 - receive - write - keep  # Ray Data's own share
    receive, write, keep = receive / n, write / n, keep / n
    del ds
    t = time.perf_counter()
    with open_writer(out) as w:
        assert len(w.done_keys) == n and len(w.done_inputs) == n // 4
    resume = (time.perf_counter() - t) / n
    us = 1e6
    print(f"\n| driver (d): {n:,} records (made by Ray tasks in {made:.1f} s) | us/record |")
    print("|---|---:|")
    print(f"| receive (Ray Data to the driver, unpickled) | {receive * us:.1f} |")
    print(f"| write, an fsync per record (first {min(n, 5000):,}) | {per_fsync * us:.1f} |")
    print(f"| write, group commit (the writer) | {write * us:.1f} |")
    print(f"| bookkeeping (summary, done keys, ledger) | {keep * us:.1f} |")
    print(f"| resume: opening the finished output (done keys, ledger) | {resume * us:.1f} |")
    for name, cost in (("an fsync per record", per_fsync), ("group commit", write)):
        rate = 1 / (receive + cost + keep)
        print(f"ceiling with {name}: {rate:,.0f} clips/s = {rate / 40:,.0f} GPUs at 40 clips/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", default=None, help="Ray cluster (default: RAY_ADDRESS/local)")
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--actors", default="1,2,4", help="read actor counts for (c)")
    ap.add_argument("--model", default=None, help="model folder for (b) (default: tiny)")
    ap.add_argument("--no-caption", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--driver-records", type=int, default=1_000_000, help="records for (d)")
    ap.add_argument("--driver-only", action="store_true", help="run (d) only")
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
    if args.driver_only:
        _driver(ray, args.driver_records, work)
        return
    addr = RayOptions(address=args.address)
    # the first stage actors of a fresh Ray pay its workers' cold start: shown, not counted
    warm = _videos(work / "warm", 1)
    dt, _ = _sample(warm, work / "s_warm", engine="ray", ray_options=addr)
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
    _driver(ray, args.driver_records, work)
    print(f"\ninputs and outputs in {work}")


if __name__ == "__main__":
    main()
