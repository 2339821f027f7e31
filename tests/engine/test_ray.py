"""The Ray engine (``engine="ray"``) on one local Ray for the whole module (2 CPUs, 512 MiB of
object store): the same records as the local engine on videos, a scene and a mesh (sample)
and with the tiny model (caption); read and generate stay two operators; every failure the
local engine survives gives the same failed record; a killed generation actor loses no clip;
a driver killed mid-run, then the same command: every clip exactly once."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_faults  # noqa: F401 - registers the "fault" kind (also in the workers)
import engine_plugins
import pytest
import ray_helpers
import scene_media
from remote_servers import chat_reply, http_server, scripted_openai_server

from framepipe.answering import AnswerSpec
from framepipe.config import SampleConfig
from framepipe.discovery import discover
from framepipe.engine import EngineTask, Resume, Work
from framepipe.engine.ray import RayEngine, RayOptions
from framepipe.generate import GenerationSettings, ModelConfig
from framepipe.generate.backend import TransformersBackend
from framepipe.output import ledger_of, open_writer, read_records
from framepipe.runs.caption import caption
from framepipe.runs.sample import sample

TESTS = Path(__file__).resolve().parents[1]
SAMPLES = TESTS.parent / "samples"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray for the suite, its own even where another Ray runs on the machine
    (``address="local"``: never joined to it); its workers import the tests' helpers."""
    import ray

    path = os.pathsep.join(p for p in [str(TESTS), os.environ.get("PYTHONPATH", "")] if p)
    os.environ["PYTHONPATH"] = path  # also for the drivers started as subprocesses
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=512 * 1024**2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ray_media")
    engine_plugins.make_video(d / "videos" / "a.mp4", 30, seed=1)
    engine_plugins.make_video(d / "videos" / "b.mp4", 20, seed=2, size=(96, 64))
    scene_media.write_scene(d / "scene", [(a, 10.0) for a in range(0, 360, 45)])
    shutil.copy(SAMPLES / "torus_knot.ply", d / "torus_knot.ply")
    return {"videos": d / "videos", "scene": d / "scene", "mesh": d / "torus_knot.ply"}


def _records(path: Path) -> dict[str, dict[str, Any]]:
    recs = list(read_records(path))
    by_key = {r["key"]: r for r in recs}
    assert len(by_key) == len(recs), "a clip has more than one record"
    return by_key


def _same(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without what differs between runs (timings)."""
    return {k: v for k, v in rec.items() if k != "timings_s"}


def test_sample_records_equal_the_local_engines(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    paths = [media["videos"], media["scene"], media["mesh"]]
    cfg = SampleConfig(n=3)
    local = sample(paths, tmp_path / "local", cfg, workers=1)
    on_ray = sample(paths, tmp_path / "ray", cfg, engine="ray", ray_options=RayOptions())
    assert local.ok and on_ray.ok and on_ray.done == local.done == 4
    a, b = _records(tmp_path / "local/manifest.jsonl"), _records(tmp_path / "ray/manifest.jsonl")
    assert {r["kind"] for r in a.values()} == {"video", "multiview", "render"}
    assert a.keys() == b.keys()
    for key, rec in a.items():
        assert _same(b[key]) == _same(rec)
        for frame in rec["frames"]:  # the same pixels saved, from the read actors
            assert (tmp_path / "ray" / frame).read_bytes() == (
                tmp_path / "local" / frame
            ).read_bytes()
    # the driver wrote the manifest and its ledger itself: nothing else is beside the frames
    files = sorted(p.name for p in (tmp_path / "ray").iterdir() if p.is_file())
    assert files == [".manifest.jsonl.inputs", "manifest.jsonl"]
    plans = [
        sorted(
            json.dumps({k: v for k, v in json.loads(line).items() if k != "at"})  # its time
            for line in ledger_of(tmp_path / e / "manifest.jsonl").read_text().splitlines()
        )
        for e in ("local", "ray")
    ]
    assert plans[0] == plans[1] and len(plans[0]) == 4  # the same plans, one per input


def test_a_manifest_streams_through_windows(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "inputs.txt"
    videos = sorted(media["videos"].glob("*.mp4"))
    manifest.write_text("".join(f"{v}\n" for v in videos))
    cfg = SampleConfig(n=2, clip_seconds=0.5)
    local = sample([], tmp_path / "local", cfg, workers=1, inputs_from=manifest)
    opts = RayOptions(window=1)  # one Ray Data execution per input
    on_ray = sample([], tmp_path / "ray", cfg, inputs_from=manifest, engine="ray", ray_options=opts)
    assert local.ok and on_ray.ok and on_ray.done == local.done == 3
    a, b = _records(tmp_path / "local/manifest.jsonl"), _records(tmp_path / "ray/manifest.jsonl")
    assert {k: _same(r) for k, r in a.items()} == {k: _same(r) for k, r in b.items()}


def test_the_cli_runs_on_ray(ray_cluster: Any, media: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from framepipe.cli import cli

    args = ["sample", str(media["videos"]), "-n", "2", "-o", str(tmp_path / "out")]
    r = CliRunner().invoke(cli, [*args, "--engine", "ray", "--decode-actors", "1"])
    assert r.exit_code == 0, r.output
    assert "2 clip(s) written, 0 already done, 0 failed" in r.output
    assert len(_records(tmp_path / "out/manifest.jsonl")) == 2
    r = CliRunner().invoke(cli, [*args, "--engine", "ray", "--decode-actors", "3"])
    assert r.exit_code == 0 and "0 clip(s) written, 2 already done" in r.output  # no Ray
    args[-1] = str(tmp_path / "more")  # clips to read: the stages are planned, and refused
    r = CliRunner().invoke(cli, [*args, "--engine", "ray", "--decode-actors", "3"])
    assert r.exit_code != 0 and "the cluster has 2 CPUs" in r.output  # before any work
    assert not (tmp_path / "more/manifest.jsonl").exists()


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_caption_records_equal_the_local_engines(
    ray_cluster: Any, media: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, sampled: bool
) -> None:
    """The same records on both engines, greedy or sampled with a seed (each answer draws
    from its own stream: the batches the engines make do not matter)."""
    import numpy as np

    from framepipe.generate import GenerationSettings

    backend = TransformersBackend(str(tiny_model_dir))
    backend.inspect()
    prepare = backend.prepare()  # the read actors send the model's pixel values
    assert prepare is not None
    frames = [np.zeros((48, 64, 3), np.uint8)] * 2
    assert prepare(frames).data.shape == (2, 3, 56, 56)
    kw: dict[str, Any] = {
        "model": str(tiny_model_dir),
        "settings": GenerationSettings(max_new_tokens=4, do_sample=sampled, temperature=1.5),
        "sample": SampleConfig(n=2, clip_seconds=0.5),
        "questions": ["What is shown?"],
    }
    local = caption([media["videos"]], tmp_path / "local.jsonl", workers=1, **kw)
    opts = RayOptions(decode_actors=1, generate_actors=1)
    on_ray = caption(
        [media["videos"]], tmp_path / "ray.jsonl", engine="ray", ray_options=opts, **kw
    )
    assert local.ok and on_ray.ok and on_ray.done == local.done == 3
    assert on_ray.model == local.model
    a, b = _records(tmp_path / "local.jsonl"), _records(tmp_path / "ray.jsonl")
    assert a.keys() == b.keys()
    for key, rec in a.items():
        assert rec["answers"] and _same(b[key]) == _same(rec)  # prepared there: same answers
    again = caption([media["videos"]], tmp_path / "ray.jsonl", engine="ray", ray_options=opts, **kw)
    assert (again.done, again.skipped) == (0, 3)


def test_relative_inputs_and_model_are_read_where_the_driver_finds_them(
    ray_cluster: Any,
    media: dict[str, Path],
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The actors' working directory is their node's (here: where Ray started), not the
    driver's: a relative model, inputs and output folder still name the driver's files, and
    the records are the local engine's (their sources as given)."""
    shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    shutil.copytree(media["videos"], tmp_path / "videos")
    monkeypatch.chdir(tmp_path)

    @ray_cluster.remote
    def cwd() -> str:
        return os.getcwd()

    assert Path(ray_cluster.get(cwd.remote())) != tmp_path  # the actors' is another
    kw: dict[str, Any] = {
        "model": "./tiny",
        "settings": GenerationSettings(max_new_tokens=4),
        "sample": SampleConfig(n=2, clip_seconds=0.5),
    }
    local = caption(["videos"], "local.jsonl", workers=1, **kw)
    opts = RayOptions(decode_actors=1, generate_actors=1)
    on_ray = caption(
        ["videos/a.mp4", "videos/b.mp4"], "ray.jsonl", engine="ray", ray_options=opts, **kw
    )
    assert on_ray.failed == [] and on_ray.done == local.done == 3
    a, b = _records(tmp_path / "local.jsonl"), _records(tmp_path / "ray.jsonl")
    assert {r["source"] for r in b.values()} == {"videos/a.mp4", "videos/b.mp4"}
    assert {k: _same(r) for k, r in a.items()} == {k: _same(r) for k, r in b.items()}
    frames = sample(["videos/b.mp4"], "out", SampleConfig(n=2), engine="ray", ray_options=opts)
    assert frames.ok and all((tmp_path / "out" / f).is_file() for f in frames.records[0].frames)


FINISHED_RERUN = """
import sys, ray
from framepipe.config import SampleConfig
from framepipe.engine.ray import RayOptions
from framepipe.runs.caption import caption
from ray_helpers import EchoGenerator
*paths, out, address = sys.argv[1:]
opts = RayOptions(address=address, decode_actors=1, generate_actors=1)
cfg = SampleConfig(n=2, clip_seconds=0.5)
s = caption(paths, out, generator=EchoGenerator(), sample=cfg, engine="ray", ray_options=opts)
print("DONE", s.done, s.skipped, len(s.failed), ray.is_initialized())
"""


def test_a_finished_rerun_on_ray_starts_neither_ray_nor_actors(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    """A re-run that finds every input done (its plan in the ledger) says so without
    joining Ray, as the local engine starts no decoder."""
    videos = [str(p) for p in sorted(media["videos"].glob("*.mp4"))]
    opts = RayOptions(decode_actors=1, generate_actors=1)
    cfg = SampleConfig(n=2, clip_seconds=0.5)
    kw: dict[str, Any] = {"sample": cfg, "engine": "ray", "ray_options": opts}
    out = tmp_path / "r.jsonl"
    first = caption(videos, out, generator=ray_helpers.EchoGenerator(), **kw)
    assert first.ok and first.done == 3
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, "-c", FINISHED_RERUN, *videos, str(out), address]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("DONE")[1].split() == ["0", "3", "0", "False"]


def test_a_partly_done_rerun_on_ray_sends_ray_only_the_inputs_to_read(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    import re

    videos = [str(p) for p in sorted(media["videos"].glob("*.mp4"))]
    opts = RayOptions(decode_actors=1)
    cfg = SampleConfig(n=2, clip_seconds=0.5)
    done = sample(videos[:1], tmp_path / "s", cfg, engine="ray", ray_options=opts)
    assert done.ok and done.done == 2
    writer = open_writer(tmp_path / "s/manifest.jsonl")
    engine = RayEngine(opts)
    tasks = [EngineTask(i) for i in discover(videos)[0]]
    recs = list(engine.run(tasks, Work(cfg), Resume(writer.done)))
    writer.close()
    assert len(recs) == 1 and recs[0].source == videos[1] and engine.skipped == 2
    sent = re.search(r"FromItems:.*?Total output num rows: (\d+)", engine.stats, re.S)
    assert sent is not None and sent.group(1) == "1"  # the input done never went to Ray


def test_caption_frames_dir_and_a_given_generator(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    kw: dict[str, Any] = {
        "generator": ray_helpers.EchoGenerator(),  # shipped to the generation actor
        "sample": SampleConfig(n=2, clip_seconds=0.5),
    }
    local = caption(
        [media["videos"]], tmp_path / "l/out.jsonl", frames_dir=tmp_path / "l/f", workers=1, **kw
    )
    opts = RayOptions(decode_actors=1, generate_actors=1)
    out = tmp_path / "r/out.parquet"  # the format asked: the parts merge into Parquet
    on_ray = caption(
        [media["videos"]], out, frames_dir=tmp_path / "r/f", engine="ray", ray_options=opts, **kw
    )
    assert local.ok and on_ray.ok and on_ray.done == local.done == 3
    from framepipe.output import read_output

    a = {r["key"]: r for r in read_output(tmp_path / "l/out.jsonl")}
    b = {r["key"]: r for r in read_output(out)}
    assert a.keys() == b.keys()
    for key, rec in a.items():
        assert b[key]["answers"] == rec["answers"]  # answers made from the same pixels
        assert b[key]["frames"] == rec["frames"] and rec["frames"][0].startswith("f/")
        for f in rec["frames"]:
            assert (tmp_path / "r" / f).read_bytes() == (tmp_path / "l" / f).read_bytes()
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == [".out.parquet.inputs", "f", "out.parquet"]


def test_a_ray_caption_summary_reports_the_actors_seconds(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    kw: dict[str, Any] = {
        "generator": ray_helpers.SlowEcho(0.5),  # 0.5 s a batch, in the generation actor
        "sample": SampleConfig(n=2, clip_seconds=0.5),
        "settings": GenerationSettings(batch_size=1),
    }
    opts = RayOptions(decode_actors=1, generate_actors=1)
    s = caption([media["videos"]], tmp_path / "r.jsonl", engine="ray", ray_options=opts, **kw)
    assert s.ok and s.done == 3
    assert 1.5 <= s.generate_s < s.elapsed_s  # three batches of 0.5 s each
    assert 0 < s.load_s < s.elapsed_s  # the actor's own load, not Ray's start-up


def test_ray_s_own_messages_stay_in_its_logs(ray_cluster: Any, tmp_path: Path) -> None:
    video = engine_plugins.make_video(tmp_path / "a.mp4", 10)
    address = ray_cluster.get_runtime_context().gcs_address
    args = ["sample", str(video), "-n", "2", "--engine", "ray", "--ray-address", address]
    quiet = _cli(*args, "-o", str(tmp_path / "q"))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr.strip().splitlines() == [
        f"1 clip(s) written, 0 already done, 0 failed -> {tmp_path / 'q/manifest.jsonl'}"
        + quiet.stderr.strip().rsplit("manifest.jsonl", 1)[1]
    ]
    loud = _cli("-v", *args, "-o", str(tmp_path / "v"))
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Progress bars disabled" in loud.stderr and "core_worker.cc" in loud.stderr


def test_caption_through_a_server_uses_cpu_clients_and_the_local_engines_records(
    ray_cluster: Any, media: dict[str, Path], openai_server: Any, tmp_path: Path
) -> None:
    from framepipe.generate import OpenAIBackend

    kw: dict[str, Any] = {
        "sample": SampleConfig(n=2, clip_seconds=0.5),
        "questions": ["What is shown?"],
    }
    settings = GenerationSettings(max_new_tokens=4)
    backend = OpenAIBackend(openai_server.url, settings=settings, max_concurrency=2)
    local = caption([media["videos"]], tmp_path / "local.jsonl", backend=backend, **kw)
    opts = RayOptions(decode_actors=1, generate_actors=1)
    engine_kw: dict[str, Any] = {"engine": "ray", "ray_options": opts}
    on_ray = caption([media["videos"]], tmp_path / "ray.jsonl", backend=backend, **engine_kw, **kw)
    assert local.ok and on_ray.ok and on_ray.done == local.done == 3
    a, b = _records(tmp_path / "local.jsonl"), _records(tmp_path / "ray.jsonl")
    assert {k: _same(r) for k, r in a.items()} == {k: _same(r) for k, r in b.items()}
    assert {r["model"]["backend"] for r in b.values()} == {"openai"}
    # HTTP clients need no GPU, even on a cluster that has some
    engine = RayEngine(opts)
    fake = {"CPU": 2.0, "GPU": 4.0}
    nodes = [{"Alive": True, "Resources": fake}]
    calls = {"cluster_resources": staticmethod(lambda: fake), "nodes": staticmethod(lambda: nodes)}
    engine.ray = type("FakeRay", (), calls)
    assert engine.resources(True, gpu=False)["generate"]["num_gpus"] == 0
    assert engine.resources(True, gpu=True)["generate"]["num_gpus"] == 1


def test_a_servers_requests_do_not_drain_between_ray_batches_while_clips_wait(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """A generation actor answering through a server works on the next batch while one
    drains: seen from the server, the requests in flight never fall to zero while clips
    are still to be asked (before, each ``map_batches`` call answered its batch to the
    last request before the next began: the server idled at every batch's tail); the
    ``max_concurrency`` requests are shared, never exceeded."""
    from framepipe.generate import OpenAIBackend

    clips = 12
    for k in range(clips):
        engine_plugins.make_video(tmp_path / "v" / f"v{k:02d}.mp4", 6, seed=70 + k, size=(32, 24))
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "posts": 0, "idle_while_waiting": 0}

    def reply(body: dict[str, Any]) -> Any:
        with lock:
            state["posts"] += 1
            first = state["posts"] == 1
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.5 if first else 0.3)  # the two slots end out of step
        with lock:
            state["now"] -= 1
            if state["now"] == 0 and state["posts"] < clips:
                state["idle_while_waiting"] += 1
        return chat_reply("ok")

    with scripted_openai_server(reply) as (url, _):
        backend = OpenAIBackend(url, max_concurrency=2)  # batches of 4 clips
        summary = caption(
            [tmp_path / "v"],
            tmp_path / "out.jsonl",
            backend=backend,
            sample=SampleConfig(n=2),
            engine="ray",
            ray_options=RayOptions(decode_actors=1, generate_actors=1),
        )
    assert summary.done == clips and not summary.failed
    assert state["posts"] == clips and state["most"] == 2
    assert state["idle_while_waiting"] == 0


def test_an_error_that_stops_the_run_stops_it_on_ray(
    ray_cluster: Any, media: dict[str, Path]
) -> None:
    from framepipe.errors import StopRunError

    cfg = SampleConfig(n=2, clip_seconds=0.5)
    opts = RayOptions(decode_actors=1, generate_actors=1)
    backend = TransformersBackend(
        settings=GenerationSettings(batch_size=1), generator=ray_helpers.StopsTheRun()
    )
    work = Work(cfg, answer=AnswerSpec(backend, ("q?",)))
    got = []
    with pytest.raises(StopRunError, match="illegal memory access"):
        for rec in RayEngine(opts).run(_tasks(media["videos"]), work):
            got.append(rec)
    assert len(got) <= 1 and all(r.status == "ok" for r in got)  # no failed record per clip


def test_a_model_that_does_not_load_on_the_actors_stops_the_run_with_one_line(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    from framepipe.errors import FramepipeError

    missing = tmp_path / "no-model-here"  # the driver's checks were skipped: only actors load
    backend = TransformersBackend(ModelConfig(str(missing)), GenerationSettings(batch_size=1))
    work = Work(SampleConfig(n=2, clip_seconds=0.5), answer=AnswerSpec(backend, ("q?",)))
    opts = RayOptions(decode_actors=1, generate_actors=1)
    with pytest.raises(FramepipeError) as err:
        list(RayEngine(opts).run(_tasks(media["videos"]), work))
    assert str(err.value) == f"{missing}: no such model folder, and not a Hugging Face hub id"


def _tasks(*paths: Path) -> list[EngineTask]:
    inputs, _ = discover(paths)
    return [EngineTask(i, {"model": "echo"}) for i in inputs]


def _echo(cfg: SampleConfig, generator: Any) -> Work:
    backend = TransformersBackend(settings=GenerationSettings(batch_size=2), generator=generator)
    return Work(cfg, answer=AnswerSpec(backend, ("q?",)))


def test_read_and_generate_are_two_operators(ray_cluster: Any, media: dict[str, Path]) -> None:
    cfg = SampleConfig(n=2, clip_seconds=0.5)
    opts = RayOptions(decode_actors=1, generate_actors=1)
    engine = RayEngine(opts)
    recs = list(engine.run(_tasks(media["videos"]), _echo(cfg, ray_helpers.EchoGenerator())))
    assert len(recs) == 3 and all(r.status == "ok" and r.answers for r in recs)
    assert engine.plan["read"] != engine.plan["generate"]
    stats = engine.stats
    assert "MapBatches(ReadStage)" in stats and "MapBatches(GenerateStage)" in stats
    assert "ReadStage)->" not in stats  # not fused into one operator


def test_a_killed_generation_actor_loses_no_clip(
    ray_cluster: Any, media: dict[str, Path], tmp_path: Path
) -> None:
    flag = tmp_path / "killed"
    cfg = SampleConfig(n=2, clip_seconds=0.5)
    opts = RayOptions(decode_actors=1, generate_actors=1)
    gen = ray_helpers.KillOnce(ray_helpers.EchoGenerator(), flag)
    recs = list(RayEngine(opts).run(_tasks(media["videos"]), _echo(cfg, gen)))
    assert flag.exists()  # the actor did die once
    assert sorted((r.source, r.clip["index"]) for r in recs if r.clip) == [
        (str(media["videos"] / "a.mp4"), 0),
        (str(media["videos"] / "a.mp4"), 1),
        (str(media["videos"] / "b.mp4"), 0),
    ]
    assert all(r.status == "ok" and r.answers for r in recs)


FAULTS_CFG = SampleConfig(
    n=3,
    sampler="engine_plugins:misbehaving",
    sampler_params={"bad_clip": 1},
    clip_seconds=0.34,  # 30 frames at 30 fps: three clips of 10 frames
)


def test_every_failure_is_the_local_engines_failed_record(ray_cluster: Any, tmp_path: Path) -> None:
    d = tmp_path / "in"
    for name in ("ok", "segv", "hang"):
        engine_plugins.make_video(d / f"{name}.mp4", 30)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (d / "raise_view.fault").write_bytes(b"x")  # building clip 1's record raises
    kw: dict[str, Any] = {"decode_timeout_s": 4.0}
    local = sample([d], tmp_path / "local", FAULTS_CFG, workers=1, **kw)
    on_ray = sample([d], tmp_path / "ray", FAULTS_CFG, engine="ray", **kw)
    a, b = _records(tmp_path / "local/manifest.jsonl"), _records(tmp_path / "ray/manifest.jsonl")
    assert a.keys() == b.keys() and len(a) == 3 + 3 + 3 + 1 + 3
    failed = {k: r for k, r in b.items() if r["status"] != "ok"}
    assert sorted(Path(r["source"]).name for r in failed.values()) == [
        "corrupt.mp4",
        "hang.mp4",
        "raise_view.fault",
        "segv.mp4",
    ]
    for key, rec in a.items():
        assert (b[key]["status"], b[key]["error"]) == (rec["status"], rec["error"])
        assert _same(b[key]) == _same(rec)
    assert "did not finish within 4 s" in failed[_key_of(b, "hang.mp4")]["error"]
    assert "SIGSEGV" in failed[_key_of(b, "segv.mp4")]["error"]
    assert len(on_ray.failed) == len(local.failed) == 4


def _key_of(recs: dict[str, dict[str, Any]], name: str) -> str:
    return next(k for k, r in recs.items() if r["status"] != "ok" and r["source"].endswith(name))


DRIVER = """
import sys
from framepipe.config import SampleConfig
from framepipe.engine.ray import RayOptions
from framepipe.runs.sample import sample
cfg = SampleConfig(n=2, sampler="engine_plugins:misbehaving", sampler_params={"delay_s": 0.4},
                   clip_seconds=0.34)
s = sample([sys.argv[1]], sys.argv[2], cfg, engine="ray",
           ray_options=RayOptions(address=sys.argv[3], decode_actors=2))
print("DONE", s.done, s.skipped, len(s.failed))
"""


def test_a_killed_driver_then_the_same_command_gives_every_clip_once(
    ray_cluster: Any, tmp_path: Path
) -> None:
    d = tmp_path / "in"
    for k in range(4):
        engine_plugins.make_video(d / f"slow_{k}.mp4", 30, seed=k)  # 3 clips each, 0.4 s each
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, "-c", DRIVER, str(d), str(out), address]
    manifest = out / "manifest.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            lines = len(manifest.read_text().splitlines()) if manifest.exists() else 0
            if lines >= 3:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the driver finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    written = [r["key"] for r in read_records(manifest)]  # each record as it came
    assert 3 <= len(written) < 12
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    done, skipped, failed = map(int, rerun.stdout.split("DONE")[1].split())
    assert skipped == len(set(written)) and done == 12 - skipped and failed == 0
    recs = _records(out / "manifest.jsonl")  # one record per clip
    assert len(recs) == 12 and all(r["status"] == "ok" for r in recs.values())
    assert set(written) <= recs.keys()


def test_sigterm_to_a_ray_driver_stops_it_like_ctrl_c_with_its_line_and_status_143(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """``ray.init`` put its own SIGTERM handler in the CLI's place: a stack dump from Ray's
    core and exit status 15, without the line that says what was written."""
    d = tmp_path / "in"
    for k in range(3):
        engine_plugins.make_video(d / f"slow_{k}.mp4", 30, seed=k)  # 3 clips each, 0.4 s each
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    code = "import sys\nfrom framepipe.cli import main\nmain(sys.argv[1:])"
    args = ["sample", str(d), "-o", str(out), "-n", "2", "--clip-seconds", "0.34"]
    args += ["--sampler", "engine_plugins:misbehaving", "--sampler-opt", "delay_s=0.4"]
    args += ["--engine", "ray", "--ray-address", address, "--decode-actors", "1"]
    manifest = out / "manifest.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.exists() and len(manifest.read_text().splitlines()) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the driver finished before it could be stopped"
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    written = len(list(read_records(manifest)))
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM received" not in err
    assert err.strip().splitlines()[-1] == (
        f"terminated (SIGTERM): {written} clip(s) written to {out}; "
        "run the same command again to do the rest"
    )
    assert 2 <= written < 9


def _cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nimport sys\nfrom framepipe.cli import main\nmain(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_a_no_op_resume_on_ray_downloads_nothing(ray_cluster: Any, tmp_path: Path) -> None:
    root = tmp_path / "www"
    for k in range(3):
        engine_plugins.make_video(root / f"v{k}.mp4", 20, seed=k)
    cfg = SampleConfig(n=2, clip_seconds=0.34)
    opts = RayOptions(decode_actors=1)
    with http_server(root) as (url, gets):
        uris = [f"{url}/v{k}.mp4" for k in range(3)]
        out = tmp_path / "out"
        first = sample(uris, out, cfg, cache_dir=tmp_path / "c1", engine="ray", ray_options=opts)
        assert first.ok and first.done == 6 and sum(gets.values()) == 3
        again = sample(uris, out, cfg, cache_dir=tmp_path / "c2", engine="ray", ray_options=opts)
        assert (again.done, again.skipped) == (0, 6) and sum(gets.values()) == 3


def test_a_read_actor_that_stopped_the_run_starts_no_decoder_for_later_inputs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until the driver stops it, a read actor is handed more inputs: each started a decoder
    that the actor's end killed, with a line naming an input that was not at fault (no Ray
    needed: the actor's class on its own)."""
    from framepipe import registry
    from framepipe.engine.ray_stages import ReadSpec, ReadStage

    # the actor says it is a worker: this test process must not stay one for later tests
    monkeypatch.setattr(registry, "_IN_WORKER", registry._IN_WORKER)
    from framepipe.engine.worker import WorkerSetup
    from framepipe.errors import StopRunError

    for name in ("stop.stall", "a.mp4"):
        if name.endswith(".mp4"):
            engine_plugins.make_video(tmp_path / name, 10)
        else:
            (tmp_path / name).write_bytes(b"")
    items, _ = discover([tmp_path / "stop.stall", tmp_path / "a.mp4"])
    setup = WorkerSetup(cfg=SampleConfig(n=2), imports=("engine_plugins",))
    actor = ReadStage(spec=pickle.dumps(ReadSpec(setup, None)), done=[])
    try:
        for k, item in enumerate(items):
            out = actor({"task": [pickle.dumps((k, EngineTask(item, {})))]})["out"]
            assert len(out) == 1 and isinstance(pickle.loads(out[0]), StopRunError)
        assert actor.decoder.starts == 1
    finally:
        actor.decoder.close()
    assert "decoder" not in caplog.text


def test_bad_engine_input_is_one_line_before_any_work(tmp_path: Path) -> None:
    video = engine_plugins.make_video(tmp_path / "a.mp4", 5)
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = _cli(
        "sample", str(video), "-o", str(out), "--engine", "ray", "--ray-address", "127.0.0.1:9"
    )
    assert r.returncode != 0 and time.monotonic() - t0 < 60
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: cannot reach the Ray cluster at 127.0.0.1:9")
    )
    assert not out.exists()  # nothing was done


def test_engine_ray_without_the_extra_exits_2_as_every_missing_extra(tmp_path: Path) -> None:
    """A missing Ray is a missing extra, refused before any work with exit status 2, as
    pyarrow for --format parquet or transnetv2 for --detector transnetv2 are."""
    video = engine_plugins.make_video(tmp_path / "a.mp4", 5)
    out = tmp_path / "out"
    args = ("sample", str(video), "-o", str(out), "--engine", "ray")
    r = _cli(*args, prelude="import sys; sys.modules['ray'] = None")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needed for --engine ray" in lines[0], lines
    assert "pip install 'framepipe[ray]'" in lines[0]
    assert not out.exists()


def test_an_address_where_another_server_listens_is_one_line_at_once(tmp_path: Path) -> None:
    """A web server's port (or a dashboard's), or a listener that says nothing, as
    ``--ray-address``: Ray's own connect would retry for over ten minutes."""
    video = engine_plugins.make_video(tmp_path / "a.mp4", 5)
    silent = socket.create_server(("127.0.0.1", 0))
    with http_server(tmp_path) as (url, _), silent:
        silent_at = f"127.0.0.1:{silent.getsockname()[1]}"
        for address in (url.removeprefix("http://"), silent_at, "127.0.0.1"):
            t0 = time.monotonic()
            out = tmp_path / "out"
            r = _cli(
                "sample", str(video), "-o", str(out), "--engine", "ray", "--ray-address", address
            )
            assert r.returncode == 1 and time.monotonic() - t0 < 60
            last = r.stderr.strip().splitlines()
            assert len(last) == 1 and last[0].startswith(
                f"Error: cannot reach the Ray cluster at {address} ("
            )
            assert not out.exists()
