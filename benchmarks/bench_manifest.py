"""Manifests stream: memory while reading a 1,000,000-row txt manifest.

    python benchmarks/bench_manifest.py [--rows 1000000] [--local]

Writes a txt manifest of ROWS inputs (``s3://`` URIs by default: no I/O per row; with
``--local``, absolute paths that do not exist, each discovered as a local file), then, in
this one process:

(a) streams every input out of :func:`framepipe.inputs.collect_inputs` and drops it, as the
    engine does: the growth of the process's peak RSS, and the peak traced by tracemalloc
    (Python allocations) during a second pass;
(b) the same inputs held in a list (what ``list(inputs)`` would cost): the RSS growth.

Prints a markdown table; the ratio (b)/(a) is measured in the same run.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _rss_mb() -> float:
    """The process's peak resident set so far, in MiB (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--local", action="store_true", help="local paths instead of s3:// URIs")
    args = ap.parse_args()

    from framepipe.inputs import collect_inputs

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "inputs.txt"
        with open(manifest, "w", encoding="utf-8") as fh:
            for k in range(args.rows):
                name = f"videos/{k // 1000:04d}/clip-{k:08d}.mp4"
                fh.write(f"/data/{name}\n" if args.local else f"s3://bucket/{name}\n")
        size_mb = manifest.stat().st_size / 2**20
        next(iter(collect_inputs([], inputs_from=manifest)[0]))  # imports, first-use caches

        base = _rss_mb()
        t0 = time.perf_counter()
        n = 0
        for _item in collect_inputs([], inputs_from=manifest)[0]:
            n += 1
        stream_s = time.perf_counter() - t0
        stream_growth = _rss_mb() - base

        tracemalloc.start()
        for _item in collect_inputs([], inputs_from=manifest)[0]:
            pass
        traced_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()

        base = _rss_mb()
        held = list(collect_inputs([], inputs_from=manifest)[0])
        list_growth = _rss_mb() - base
        assert len(held) == n == args.rows
        del held

    kind = "local paths" if args.local else "s3:// URIs"
    print(f"manifest: {args.rows:,} rows of {kind}, {size_mb:.0f} MiB of text\n")
    print("| | peak RSS growth (MiB) | tracemalloc peak (MiB) | rows/s |")
    print("|---|---|---|---|")
    print(
        f"| streamed (what the engines do) | {stream_growth:.1f} | {traced_peak_mb:.2f} "
        f"| {n / stream_s:,.0f} |"
    )
    print(f"| held in a list | {list_growth:.0f} | - | - |")
    ratio = list_growth / max(stream_growth, 0.1)
    print(f"\nlist / stream RSS growth: {ratio:.0f}x (stream growth floored at 0.1 MiB)")


if __name__ == "__main__":
    main()
