"""The openai backend against a server of mixed latency: requests kept in flight across
clips against the old batches that wait for their slowest request, in one run.

    python benchmarks/bench_server_inflight.py [--clips 64] [--concurrency 16]
        [--fast 0.1] [--slow 1.5] [--slow-share 0.25] [--repeat 1]

``caption`` of CLIPS small synthetic videos (n=2, one question) with ``--backend openai``
against a scripted OpenAI-shaped server on 127.0.0.1 that answers each request after FAST
or SLOW seconds (SLOW for a fixed share of the clips, chosen from their pixels, so both
runs see the same latencies). ``batches``: the old schedule, each batch of twice
CONCURRENCY clips answered before the next starts (the backend without ``in_flight``, so
:class:`~framepipe.answering.Answering` batches as it does for the in-process backend);
``in flight``: the backend as it is. Seconds are the server's, from the first request
received to the last answer sent (decoding start-up left out; when the last request came
shows a run that decoding held back, on a busy machine); ``ideal``: the same
latencies list-scheduled on CONCURRENCY slots in the order the requests came. The records
of both runs are compared (timings left out). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


class MixedLatency:
    """Answers each request after ``fast`` or ``slow`` seconds; notes when it was busy."""

    def __init__(self, fast: float, slow: float, share: float) -> None:
        self.fast, self.slow, self.share = fast, slow, share
        self.lock = threading.Lock()
        self.first = self.last = self.arrived = 0.0
        self.now = self.most = 0

    def latency(self, body: dict[str, Any]) -> float:
        url = body["messages"][-1]["content"][0]["image_url"]["url"]  # type: ignore[index]
        return self.slow if zlib.crc32(url.encode()) % 1000 < self.share * 1000 else self.fast

    def __call__(self, body: dict[str, Any]) -> Any:
        from remote_servers import chat_reply

        wait = self.latency(body)
        with self.lock:
            self.first = self.first or time.perf_counter()
            self.arrived = time.perf_counter()
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(wait)
        with self.lock:
            self.now -= 1
            self.last = time.perf_counter()
        return chat_reply(f"waited {wait:g} s")

    def reset(self) -> None:
        self.first = self.last = self.arrived = 0.0
        self.most = 0


def ideal_s(latencies: list[float], slots: int) -> float:
    """The latencies started in order, each on the first free of ``slots``."""
    free = [0.0] * slots
    for s in latencies:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def records(path: Path) -> dict[str, dict[str, Any]]:
    from framepipe.output import read_records

    out = {}
    for r in read_records(path):
        r.pop("timings_s", None)
        out[r["source"]] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--fast", type=float, default=0.1)
    ap.add_argument("--slow", type=float, default=1.5)
    ap.add_argument("--slow-share", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    import engine_plugins
    from remote_servers import scripted_openai_server

    from framepipe import SampleConfig, caption
    from framepipe.generate import OpenAIBackend

    class Batches(OpenAIBackend):
        """The old schedule: loaded, it answers batches of 2 x concurrency clips only (no
        ``in_flight``), each batch's requests concurrent."""

        def load(self) -> Any:
            return Answers(super().load())

    class Answers:
        def __init__(self, backend: OpenAIBackend) -> None:
            self.answer_each = backend.answer_each

    server = MixedLatency(args.fast, args.slow, args.slow_share)
    with tempfile.TemporaryDirectory() as tmp, scripted_openai_server(server) as (url, got):
        videos = Path(tmp) / "videos"
        for k in range(args.clips):
            engine_plugins.make_video(videos / f"v{k:03d}.mp4", 8, seed=k, size=(32, 24))
        rows: list[tuple[str, float, int, float]] = []
        outs: dict[str, Path] = {}
        order: list[float] = []
        for rep in range(args.repeat):
            for name, cls in (("batches", Batches), ("in flight", OpenAIBackend)):
                out = Path(tmp) / f"{name.replace(' ', '_')}{rep}.jsonl"
                backend = cls(url, max_concurrency=args.concurrency)
                server.reset()
                got.clear()
                s = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=2)
                assert s.done == args.clips and not s.failed, s.failed
                came = server.arrived - server.first
                rows.append((name, server.last - server.first, server.most, came))
                outs[name] = out
                order = [server.latency(b) for b in got]
        ideal = ideal_s(order, args.concurrency)
        same = records(outs["batches"]) == records(outs["in flight"])
    slow = sum(1 for x in order if x == args.slow)
    print(
        f"{args.clips} clips, {slow} answered in {args.slow:g} s and the others in "
        f"{args.fast:g} s, --max-concurrency {args.concurrency} (batches of "
        f"{2 * args.concurrency}); records the same in both runs: {same}\n"
    )
    print("| schedule | server busy s | last request came at s | most held | vs ideal |")
    print("|---|---:|---:|---:|---:|")
    for name, secs, most, came in rows:
        print(f"| {name} | {secs:.2f} | {came:.2f} | {most} | {secs / ideal:.2f}x |")
    print(f"| ideal ({args.concurrency} slots) | {ideal:.2f} | | | 1.00x |")
    old = sum(r[1] for r in rows if r[0] == "batches")
    new = sum(r[1] for r in rows if r[0] == "in flight")
    print(f"\nbatches / in flight: {old / new:.2f}x")


if __name__ == "__main__":
    main()
