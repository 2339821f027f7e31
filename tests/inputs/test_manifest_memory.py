"""A manifest streams: memory does not grow with its number of rows (tracemalloc peak while
every input is made and dropped), and the local engine reads its tasks lazily (it never
lists them). The 1,000,000-row figure is benchmarks/bench_manifest.py's (BENCHMARKS.md)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import engine_plugins

from framepipe.config import SampleConfig
from framepipe.discover import Input
from framepipe.engine import EngineTask, LocalEngine, Work
from framepipe.inputs import collect_inputs


def _peak_while_streaming(manifest: Path) -> tuple[int, int]:
    """(rows, peak traced bytes) of iterating the manifest's inputs once."""
    tracemalloc.start()
    try:
        inputs, _ = collect_inputs([], inputs_from=manifest)
        n = 0
        for item in inputs:
            n += item.uri is not None
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _write(path: Path, rows: int) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(rows):
            fh.write(f"s3://bucket/videos/{k // 1000:04d}/clip-{k:08d}.mp4\n")
    return path


def test_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    small = _write(tmp_path / "small.txt", 2_000)
    big = _write(tmp_path / "big.txt", 20_000)  # 1.2 MB of text
    n_small, peak_small = _peak_while_streaming(small)
    n_big, peak_big = _peak_while_streaming(big)
    assert (n_small, n_big) == (2_000, 20_000)
    # ten times the rows, the same peak (within the allocator's noise): nothing is kept
    assert peak_big < 1.5 * peak_small + 256 * 1024, (peak_small, peak_big)
    # what a list of those inputs would hold, for scale
    tracemalloc.start()
    try:
        held = list(collect_inputs([], inputs_from=big)[0])
        listed = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == 20_000
    # streaming 18,000 more rows grew the peak by less than 5% of what holding them takes
    assert peak_big - peak_small < 0.05 * listed * 18 / 20, (peak_small, peak_big, listed)


def test_the_engine_reads_its_tasks_lazily(tmp_path: Path) -> None:
    video = engine_plugins.make_video(tmp_path / "v.mp4", 10, seed=1)
    pulled: list[int] = []

    def tasks() -> Iterator[EngineTask]:
        for k in range(40):
            pulled.append(k)
            yield EngineTask(Input(video, "video", id=str(k)))

    engine = LocalEngine(workers=1, prefetch=1)
    results = engine.run(tasks(), Work(SampleConfig(n=2)))
    first = next(results)
    assert first.status == "ok"
    assert len(pulled) <= 4  # a stream of 40 is not listed to start
    rest = list(results)
    assert len(pulled) == 40 and 1 + len(rest) == 40
    assert sorted(int(r.extra["id"]) for r in [first, *rest]) == list(range(40))
