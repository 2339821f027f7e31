"""The Ray engine on a real multi-node cluster on this machine (``ray.cluster_utils.Cluster``:
a head without CPUs and worker nodes of one CPU, each with its own raylet), the driver a
process of its own that joins it by address: the records equal the local engine's; a node
added mid-run gets work (its read actor's records name its raylet); a node killed mid-run
loses nothing (every clip exactly once, and a re-run finds them all done)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
import scene_media

from framepipe.config import SampleConfig
from framepipe.output import read_records
from framepipe.runs.sample import sample

TESTS = Path(__file__).resolve().parents[1]
SAMPLES = TESTS.parent / "samples"
MB = 1024**2

DRIVER = """
import json, sys
from framepipe.config import SampleConfig
from framepipe.engine.ray import RayOptions
from framepipe.runs.sample import sample
a = json.loads(sys.argv[1])
opts = RayOptions(address=a["address"], decode_actors=a["actors"] and tuple(a["actors"]))
s = sample(a["paths"], a["out"], SampleConfig(**a["cfg"]), engine="ray", ray_options=opts)
print("DONE", s.done, s.skipped, len(s.failed))
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node without CPUs (the drivers join it; no actor runs there); each test adds
    and removes its worker nodes. The nodes' workers import the tests' helper modules."""
    from ray.cluster_utils import Cluster

    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    head = {"num_cpus": 0, "include_dashboard": False, "object_store_memory": 100 * MB}
    c = Cluster(initialize_head=True, head_node_args=head)
    try:
        yield c
    finally:
        c.shutdown()
        mp.undo()


def _node(cluster: Any) -> Any:
    return cluster.add_node(num_cpus=1, object_store_memory=100 * MB)


def _raylet_pid(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def _driver(
    cluster: Any, paths: list[Path], out: Path, cfg: dict[str, Any], actors: Any, **env: str
) -> Any:
    arg = {"address": cluster.address, "paths": [str(p) for p in paths], "out": str(out)}
    arg.update(cfg=cfg, actors=actors)
    cmd = [sys.executable, "-c", DRIVER, json.dumps(arg)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )


def _finish(proc: Any) -> tuple[int, int, int]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    done, skipped, failed = map(int, re.findall(r"DONE (\d+) (\d+) (\d+)", out)[0])
    return done, skipped, failed


def _wait_for_records(manifest: Path, proc: Any, raylet_pid: int | None = None) -> None:
    """Until the driver has written a record (one read on the node of ``raylet_pid``)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        recs = list(read_records(manifest)) if manifest.exists() else []
        if any(raylet_pid in (None, r["selection"]["raylet_pid"]) for r in recs):
            return
        time.sleep(0.1)
    raise AssertionError("the driver ended, or wrote no such record in time")


def _by_key(manifest: Path) -> dict[str, dict[str, Any]]:
    recs = list(read_records(manifest))
    by_key = {r["key"]: r for r in recs}
    assert len(by_key) == len(recs), "a clip has more than one record"
    return by_key


def _slow_videos(folder: Path, count: int) -> list[Path]:
    return [engine_plugins.make_video(folder / f"v{k}.mp4", 30, seed=k) for k in range(count)]


SLOW = {"n": 2, "sampler": "ray_helpers:on_node", "clip_seconds": 0.34}  # three clips each


def test_records_equal_the_local_engines_on_three_nodes(cluster: Any, tmp_path: Path) -> None:
    nodes = [_node(cluster), _node(cluster)]
    try:
        d = tmp_path / "in"
        engine_plugins.make_video(d / "videos" / "a.mp4", 30, seed=1)
        engine_plugins.make_video(d / "videos" / "b.mp4", 20, seed=2, size=(96, 64))
        scene_media.write_scene(d / "scene", [(a, 10.0) for a in range(0, 360, 45)])
        shutil.copy(SAMPLES / "torus_knot.ply", d / "torus_knot.ply")
        paths = [d / "videos", d / "scene", d / "torus_knot.ply"]
        on_ray = _finish(_driver(cluster, paths, tmp_path / "ray", {"n": 3}, None))
        local = sample(paths, tmp_path / "local", SampleConfig(n=3), workers=1)
        assert local.ok and on_ray == (local.done, 0, 0) == (4, 0, 0)
        a = _by_key(tmp_path / "local/manifest.jsonl")
        b = _by_key(tmp_path / "ray/manifest.jsonl")
        assert a.keys() == b.keys()
        for key, rec in a.items():
            assert {k: v for k, v in b[key].items() if k != "timings_s"} == {
                k: v for k, v in rec.items() if k != "timings_s"
            }
            frame = rec["frames"][-1]
            assert (tmp_path / "ray" / frame).read_bytes() == (
                tmp_path / "local" / frame
            ).read_bytes()
    finally:
        for node in nodes:
            cluster.remove_node(node)


def test_a_node_added_mid_run_gets_work(cluster: Any, tmp_path: Path) -> None:
    first = _node(cluster)
    added = None
    try:
        # 36 clips of 0.6 s: 22 s on one node, room for a new node's actor to start on a
        # loaded machine (a new worker process imports framepipe and its decoders)
        videos = _slow_videos(tmp_path / "in", 12)
        out = tmp_path / "out"
        cfg = {**SLOW, "sampler_params": {"delay_s": 0.6}}
        # Ray Data asks for a new node's resources every 10 s by default: 1 s here
        fast = {"RAY_DATA_MIN_GAP_BETWEEN_AUTOSCALING_REQUESTS": "1"}
        proc = _driver(cluster, videos, out, cfg, [1, 4], **fast)  # one read actor, up to 4
        _wait_for_records(out / "manifest.jsonl", proc)
        added = _node(cluster)
        assert _finish(proc) == (36, 0, 0)
        recs = _by_key(out / "manifest.jsonl")
        nodes = {r["selection"]["raylet_pid"] for r in recs.values()}
        assert _raylet_pid(added) in nodes and _raylet_pid(first) in nodes
    finally:
        for node in (first, added):
            if node is not None:
                cluster.remove_node(node)


def test_a_node_killed_mid_run_loses_nothing(cluster: Any, tmp_path: Path) -> None:
    nodes = [_node(cluster), _node(cluster)]
    try:
        videos = _slow_videos(tmp_path / "in", 6)
        out = tmp_path / "out"
        cfg = {**SLOW, "sampler_params": {"delay_s": 0.4}}
        proc = _driver(cluster, videos, out, cfg, [2, 2])  # a read actor on each node
        killed = nodes.pop()
        _wait_for_records(out / "manifest.jsonl", proc, _raylet_pid(killed))
        cluster.remove_node(killed, allow_graceful=False)  # its actor dies, on its next input
        nodes.append(_node(cluster))  # room for Ray to restart it
        done, skipped, failed = _finish(proc)
        recs = _by_key(out / "manifest.jsonl")  # every clip exactly once
        assert (done, skipped, failed) == (18, 0, 0) and len(recs) == 18
        assert all(r["status"] == "ok" for r in recs.values())
        again = sample(videos, out, SampleConfig(**cfg), workers=0)  # the output is whole
        assert (again.done, again.skipped) == (0, 18)
    finally:
        for node in nodes:
            cluster.remove_node(node)
