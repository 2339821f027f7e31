"""Outputs at scale: the driver's peak memory and wall time over outputs of many records.

    python benchmarks/bench_output.py [--records 200000] [--keep DIR] [--baseline TREE]
                                      [--parts-only]

Makes, with the library's own writers and record constructors (``open_writer``,
``ok_record``, ``failed_record``, input plans in the ledger), outputs of RECORDS clip
records (4 clips per input, 3 questions with answers of ~300 characters, 16-character keys;
6% of the clips fail, two thirds of those are retried by a later run that was stopped before
it tidied the file, so those clips have an earlier failed record and a later ok one):

- ``one.jsonl``: one JSONL file; ``one.parquet``: one Parquet file (the retries in its
  journal); ``parts/``: a folder of 4 JSONL part files (a quarter of the clips each).

Then, each in a fresh process (peak RSS from ``getrusage``, less that of a process that only
imported the same modules; wall time of the step alone):

(a) ``resume``: a re-run opens the output for writing (``open_writer``, its ``done`` keys
    and inputs, as ``framepipe.runs`` passes them to the engine) and closes it (which tidies
    the file: one record per clip), on a copy;
(b) ``read_output``: every record, one per clip, iterated and dropped;
(c) ``merge`` of the 4 parts into one JSONL file;
(d) ``report`` (``write_report``, paged, no thumbnails) of the JSONL file.

``--parts-only`` makes the folder of parts only, and runs the four steps on it (the resume:
a new part, its done keys read from all four). ``--baseline TREE`` runs every step also with
the framepipe of another source tree (e.g. a ``git worktree`` of an earlier commit), right
before this one, and prints the ratios: compare times only within one run (the machine's load
varies). Prints a markdown table (MB = MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIPS_PER_INPUT = 4
PARTS = 4
TEXT = "a person walks across a sunlit street while cars pass slowly behind them and a dog "
TEXT += "follows the camera pans left to reveal a market with fruit stalls and a cyclist"
WORDS = TEXT.split()


def _rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _answer(k: int, q: int) -> str:
    n = len(WORDS)
    return " ".join(WORDS[(k * 7 + q * 13 + i) % n] for i in range(55))


def _records(first: int, last: int) -> Any:
    """``(record, plan or None)`` for clips ``first..last-1`` (a plan after an input's last
    clip), and the failed clips' numbers to retry."""
    from framepipe.records import InputPlan, failed_record, ok_record
    from framepipe.utils import stable_digest

    questions = ["Describe the clip.", "What happens last?", "How many people are there?"]
    model = {"id": "llava-hf/llava-interleave-qwen-0.5b-hf", "revision": "main"}
    model["backend"] = "transformers"
    keys: list[str] = []
    for c in range(first, last):
        inp, j = divmod(c, CLIPS_PER_INPUT)
        source = f"/data/videos/{inp // 1000:04d}/clip-{inp:08d}.mp4"
        key = stable_digest(["clip", c])
        ikey = stable_digest(["input", inp])
        fields: dict[str, Any] = {
            "kind": "video",
            "clip": {"start_frame": j * 300, "end_frame": j * 300 + 299, "label": f"w{j}"},
            "sampler": {"name": "uniform", "params": {"n": 8}},
            "indices": [j * 300 + 37 * i for i in range(8)],
            "timestamps_s": [round((j * 300 + 37 * i) / 30, 6) for i in range(8)],
            "key": key,
            "timings_s": {"read": 0.41, "generate": 1.93},
            "extra": {"input_key": ikey},
        }
        if c % 50 < 3:  # 6% fail
            rec = failed_record(source, "decoder crashed (SIGSEGV)", **fields)
        else:
            answers = [_answer(c, q) for q in range(3)]
            rec = ok_record(source, model=model, questions=questions, answers=answers, **fields)
        keys.append(key)
        plan = None
        if j == CLIPS_PER_INPUT - 1 or c == last - 1:
            plan = InputPlan(stable_digest(["plan", inp]), tuple(keys), source, ikey)
            keys = []
        yield rec, plan


def _retries(first: int, last: int) -> Any:
    """The later ok records of two thirds of the failed clips."""
    from framepipe.records import ok_record

    for rec, _ in _records(first, last):
        if rec.status == "failed" and int(rec.key or "0", 16) % 3:
            yield ok_record(
                rec.source,
                **{
                    k: v
                    for k, v in vars(rec).items()
                    if k not in ("source", "status", "error", "answers")
                },
                answers=["retried"] * 3,
            )


def _write(path: Path, first: int, last: int, part: int | None = None) -> None:
    """A first run over clips ``first..last-1``, then a retry run stopped before it tidied."""
    from framepipe.output import JsonlWriter, open_writer
    from framepipe.output.store import journal_of

    with open_writer(path, part=part, fsync=False) as w:
        for rec, plan in _records(first, last):
            w.write(rec)
            if plan is not None:
                w.plan(plan)
    target = w.path if not str(path).endswith(".parquet") else journal_of(path)
    retry = JsonlWriter(target, compact=False, fsync=False, done_keys=())
    for rec in _retries(first, last):
        retry.write(rec)
    retry.close()


def make(folder: Path, n: int, parts_only: bool = False) -> None:
    if not parts_only:
        _write(folder / "one.jsonl", 0, n)
        _write(folder / "one.parquet", 0, n)
    step = -(-n // PARTS)
    for p in range(PARTS):
        _write(folder / "parts", p * step, min(n, (p + 1) * step), part=p)


# -- one step, in a fresh process -------------------------------------------------------------
def _step(what: str, path: str, scratch: str) -> dict[str, Any]:
    import framepipe.output
    import framepipe.report  # (imported before the baseline)
    from framepipe.output.parquet import _pa

    _pa()
    base = _rss_mb()
    t0 = time.perf_counter()
    n = 0
    if what == "resume":
        with framepipe.output.open_writer(path, fsync=False) as w:
            n = len(w.done)
    elif what == "read_output":
        for _ in framepipe.output.read_output(path):
            n += 1
    elif what == "merge":
        n = framepipe.output.merge([path], Path(scratch) / "merged.jsonl").records
    elif what == "report":
        from framepipe.report import write_report

        write_report([path], Path(scratch) / "report.html", thumbnails=False)
    return {"wall_s": time.perf_counter() - t0, "rss_mb": _rss_mb(), "base_mb": base, "n": n}


def _run(what: str, path: Path, scratch: Path, tree: str | None = None) -> dict[str, Any]:
    if what == "resume" and path.is_dir():  # it tidies the files: on a copy
        path = Path(shutil.copytree(path, scratch / f"copy-{path.name}"))
    elif what == "resume":
        copy = scratch / f"copy-{path.name}"
        shutil.copyfile(path, copy)
        for extra in (f".{path.name}.inputs", f".{path.name}.journal"):
            if (path.parent / extra).exists():
                shutil.copyfile(
                    path.parent / extra, scratch / f".{copy.name}{extra[len(path.name) + 1 :]}"
                )
        path = copy
    cmd = [sys.executable, __file__, "--step", what, str(path), str(scratch)]
    env = {**os.environ, "PYTHONPATH": tree} if tree else None  # (the framepipe to run)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--keep", type=Path, help="make (or reuse) the outputs in this folder")
    ap.add_argument(
        "--baseline",
        metavar="TREE",
        help="also run each step with the framepipe in this source tree (a checkout of "
        "another commit), just before the current one: the ratios compare the two",
    )
    ap.add_argument(
        "--parts-only", action="store_true", help="only the folder of parts (quicker to make)"
    )
    ap.add_argument("--step", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:
        make(Path(args.make[0]), int(args.make[1]), args.parts_only)
        return
    if args.step:
        print(json.dumps(_step(*args.step)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "data"
        folder.mkdir(parents=True, exist_ok=True)
        if not (
            folder / ("parts" if args.parts_only else "one.jsonl")
        ).exists():  # in a process of its own, so that this one
            t0 = time.perf_counter()  # stays small (a child's ru_maxrss starts at its parent's)
            cmd = [sys.executable, __file__, "--make", str(folder), str(args.records)]
            cmd += ["--parts-only"] if args.parts_only else []
            subprocess.run(cmd, check=True)
            print(
                f"made {args.records} records in {time.perf_counter() - t0:.0f} s", file=sys.stderr
            )
        scratch = Path(tmp) / "scratch"
        rows = [("resume", "parts"), ("read_output", "parts"), ("merge", "parts")]
        rows += (
            [("report", "parts")]
            if args.parts_only
            else [
                ("resume", "one.jsonl"),
                ("resume", "one.parquet"),
                ("read_output", "one.jsonl"),
                ("read_output", "one.parquet"),
                ("report", "one.jsonl"),
            ]
        )
        size = sum(f.stat().st_size for f in (folder / "parts").iterdir()) / 2**20
        print(
            f"\n{args.records} records ({size:.0f} MB of JSONL; this process: {_rss_mb():.0f} MB)\n"
        )
        trees = [(args.baseline, "baseline"), (None, "this")] if args.baseline else [(None, "")]
        print("| step | output | framepipe | wall s | peak RSS MB | over imports MB | records |")
        print("|---|---|---|---|---|---|---|")
        for what, name in rows:
            first: dict[str, Any] = {}
            for i, (tree, label) in enumerate(trees):
                scratch.mkdir(exist_ok=True)
                r = _run(what, folder / name, scratch, tree)
                shutil.rmtree(scratch)
                grow = r["rss_mb"] - r["base_mb"]
                ratio = ""
                if i == 0:
                    first = {**r, "grow": grow}
                else:
                    t, g = r["wall_s"] / first["wall_s"], grow / max(first["grow"], 1)
                    ratio = f" (x{t:.2f} time, x{g:.2f} memory)"
                print(
                    f"| {what} | {name} | {label}{ratio} | {r['wall_s']:.2f} | {r['rss_mb']:.0f} "
                    f"| {grow:.0f} | {r['n']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
