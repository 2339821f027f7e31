"""The local engine: worker processes give the same clips as the plain pipeline, prefetch is
bounded, and a decoder that hangs or crashes is stopped, recorded, and the run goes on."""

from __future__ import annotations

import logging
import pickle
import time
import types
from pathlib import Path
from typing import Any

import engine_faults
import engine_plugins
import numpy as np
import pytest

from framepipe.config import SampleConfig
from framepipe.discovery import discover
from framepipe.engine import DEFAULT_DECODE_TIMEOUT_S, EngineTask, LocalEngine, Work
from framepipe.engine.transfer import SHM_MIN_BYTES, pack_frames, unpack_frames
from framepipe.records import ClipJob
from framepipe.types import FrameBatch

HANG_CFG = SampleConfig(
    n=3,
    sampler="engine_plugins:misbehaving",
    sampler_params={"bad_clip": 1},
    clip_seconds=0.34,  # 30 frames at 30 fps: three clips of 10 frames
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("engine_videos")
    engine_plugins.make_video(d / "a.mp4", 30, seed=1)
    engine_plugins.make_video(d / "b.mp4", 30, seed=2, size=(640, 480))  # frames via shm
    engine_plugins.make_video(d / "c.mp4", 12, seed=3)
    return d


def _tasks(*paths: Path) -> list[EngineTask]:
    inputs, _ = discover(paths)
    return [EngineTask(i, {"model": "x"}) for i in inputs]


def _by_key(jobs: list[ClipJob]) -> dict[str, ClipJob]:
    return {j.key: j for j in jobs if j.key}


def _work(cfg: SampleConfig, timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S, **kw: Any) -> Work:
    """What the engine's tests ask: read the clips and keep their frames."""
    return Work(cfg, timeout_s, keep_frames=True, **kw)


def test_workers_give_the_same_clips_as_inline(videos: Path) -> None:
    cfg = SampleConfig(n=4, clip_seconds=0.5)
    inline = list(LocalEngine(workers=0).jobs(_tasks(videos), _work(cfg)))
    eng = LocalEngine(workers=2, prefetch=2)
    parallel = list(eng.jobs(_tasks(videos), _work(cfg)))
    assert len(inline) == len(parallel) == 5
    a, b = _by_key(inline), _by_key(parallel)
    assert a.keys() == b.keys()
    for key, ja in a.items():
        jb = b[key]
        assert jb.ok and ja.ok
        assert jb.record().to_json()["indices"] == ja.record().to_json()["indices"]
        assert jb.record().clip == ja.record().clip
        assert jb.batch is not None and ja.batch is not None
        np.testing.assert_array_equal(jb.batch.frames, ja.batch.frames)
        assert jb.batch.timestamps_s == ja.batch.timestamps_s
    assert eng.restarts == 0


def test_done_keys_are_skipped_in_workers(videos: Path) -> None:
    cfg = SampleConfig(n=2, clip_seconds=0.5)
    first = list(LocalEngine(workers=0).jobs(_tasks(videos), _work(cfg)))
    done = {j.key for j in first[:3] if j.key}
    skips: list[int] = []
    eng = LocalEngine(workers=2, on_skip=skips.append)
    rest = list(eng.jobs(_tasks(videos), _work(cfg), done))
    assert eng.skipped == sum(skips) == 3
    assert {j.key for j in rest} == {j.key for j in first} - done


@pytest.mark.parametrize("stacked", [True, False])
@pytest.mark.parametrize("size", [(8, 6), (640, 480)])
def test_frames_round_trip(stacked: bool, size: tuple[int, int]) -> None:
    w, h = size
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    frames = np.stack(arrays) if stacked else [*arrays[:3], arrays[3][: h // 2]]
    batch = FrameBatch(frames, (0, 3, 5, 9), timestamps_s=(0.0, 0.1, 0.2, 0.3))
    shell, packed = pack_frames(batch)
    assert (packed.shm_name is not None) == (w * h * 3 * 4 >= SHM_MIN_BYTES)
    back = unpack_frames(shell, packed)
    assert back.indices == batch.indices and back.timestamps_s == batch.timestamps_s
    assert isinstance(back.frames, np.ndarray) == stacked
    for x, y in zip(back.images(), batch.images()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("behaviour", ["hang", "segv", "exit"])
def test_a_bad_decoder_is_stopped_and_its_clip_recorded(
    videos: Path, tmp_path: Path, behaviour: str
) -> None:
    bad = engine_plugins.make_video(tmp_path / f"x_{behaviour}.mp4", 30, seed=4)
    t0 = time.monotonic()
    eng = LocalEngine(workers=2)
    jobs = list(eng.jobs(_tasks(videos / "a.mp4", bad, videos / "c.mp4"), _work(HANG_CFG, 3.0)))
    elapsed = time.monotonic() - t0
    failed = [j.record() for j in jobs if j.record().status != "ok"]
    assert len(failed) == 1, [r.error for r in failed]
    rec = failed[0]
    assert rec.source == str(bad) and rec.clip is not None and rec.clip["index"] == 1
    expected = {
        "hang": "did not finish within 3 s",
        "segv": "died (SIGSEGV)",
        "exit": "exited with status 3",
    }[behaviour]
    assert rec.error is not None and str(bad) in rec.error and expected in rec.error
    # the rest of the bad input was read by a fresh worker; the others are untouched
    ok = sorted((j.source, j.clip["index"]) for j in jobs if j.ok)  # type: ignore[index]
    a, c = str(videos / "a.mp4"), str(videos / "c.mp4")
    assert ok == sorted([(a, 0), (a, 1), (a, 2), (str(bad), 0), (str(bad), 2), (c, 0)])
    assert eng.restarts == 1
    assert elapsed < 30


@pytest.mark.parametrize("name", ["open_hang.stall", "open_segv.stall"])
def test_a_source_that_hangs_while_opening(videos: Path, tmp_path: Path, name: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(b"x")
    eng = LocalEngine(workers=1)
    jobs = list(eng.jobs(_tasks(bad, videos / "c.mp4"), _work(SampleConfig(n=2), 3.0)))
    assert [j.record().status for j in jobs] == ["failed", "ok"]
    rec = jobs[0].record()
    assert rec.source == str(bad) and rec.kind == "stall" and rec.clip is None
    assert rec.extra["stage"] == "open" and rec.key
    assert rec.error is not None and ("did not finish" in rec.error or "SIGSEGV" in rec.error)


def _log_prepared(job: ClipJob, *, log_path: Path) -> None:
    with open(log_path, "a") as fh:
        fh.write(f"{job.key}\n")


def test_prefetch_is_bounded(tmp_path: Path) -> None:
    import functools

    for k in range(6):
        engine_plugins.make_video(tmp_path / "v" / f"{k}.mp4", 6, seed=k)
    log_path = tmp_path / "prepared.txt"
    log_path.touch()
    prefetch, workers = 2, 2
    eng = LocalEngine(workers=workers, prefetch=prefetch)
    work = _work(SampleConfig(n=2), finish=functools.partial(_log_prepared, log_path=log_path))
    consumed = 0
    most_ahead = 0
    for _job in eng.jobs(_tasks(tmp_path / "v"), work):
        consumed += 1
        time.sleep(0.25)  # a slow model: the workers must wait, not run ahead
        prepared = len(log_path.read_text().split())
        most_ahead = max(most_ahead, prepared - consumed)
    assert consumed == 6
    # at most `prefetch` clips queued, plus one per worker handed over and waiting
    assert 1 <= most_ahead <= prefetch + workers


def test_stopping_early_stops_the_workers(videos: Path) -> None:
    eng = LocalEngine(workers=2, prefetch=1)
    it = eng.jobs(_tasks(videos), _work(SampleConfig(n=2, clip_seconds=0.2)))
    next(it)
    procs = [d.process for d in eng.decoders if d.process is not None]
    assert procs
    it.close()  # the consumer goes away (e.g. Ctrl-C)
    assert all(not p.is_alive() for p in procs)


def test_bad_settings() -> None:
    from framepipe.errors import ConfigError

    with pytest.raises(ConfigError, match="workers"):
        LocalEngine(workers=-1)
    with pytest.raises(ConfigError, match="timeout"):
        Work(SampleConfig(), decode_timeout_s=0)


def test_sample_with_workers_writes_the_same_manifest(videos: Path, tmp_path: Path) -> None:
    from framepipe.output import read_records
    from framepipe.runs.sample import MANIFEST, sample

    cfg = SampleConfig(n=3, clip_seconds=0.5)
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        s = sample([videos], out, cfg, workers=workers)
        assert s.done == 5 and not s.failed
        recs = sorted(read_records(out / MANIFEST), key=lambda r: r["key"])
        for r in recs:
            assert len(r["frames"]) == 3 and (out / r["contact_sheet"]).is_file()
            r.pop("timings_s")
        runs[workers] = recs
        again = sample([videos], out, cfg, workers=workers)
        assert (again.done, again.skipped) == (0, 5)
    assert runs[0] == runs[2]


# -- an ordinary exception in a decoder fails its clip only --------------------------------
# The local engine: an ordinary exception inside a decoder (a plug-in's bug, a library error)
# fails its clip with a one-line ``<file>: <Type>: <message>`` error, and the same worker
# process goes on with the next clip; ``sample(keep_records=False)`` keeps no records.

CFG = SampleConfig(n=3, sampler="engine_faults:zero_div", clip_seconds=0.34)  # 3 clips of 10


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faults")
    paths = {
        "good": engine_plugins.make_video(d / "a.mp4", 30, seed=1),
        "zdiv": engine_plugins.make_video(d / "b_zdiv.mp4", 30, seed=2),
    }
    for name in ("view", "pickle", "close"):
        paths[name] = d / f"c_{name}.fault"
        paths[name].write_bytes(b"fault")
    return paths


def _run(
    eng: LocalEngine, *paths: Path, timeout_s: float = 60, done: frozenset[str] = frozenset()
) -> list[ClipJob]:
    found, _ = discover(paths)
    tasks = (EngineTask(i, {"model": "x"}) for i in found)
    return list(eng.jobs(tasks, _work(CFG, timeout_s), done))


def _summary(jobs: list[ClipJob]) -> list[tuple[str, int | None, str, str | None]]:
    out = []
    for j in jobs:
        r = j.record()
        out.append((r.source, (r.clip or {}).get("index"), r.status, r.error))
    return sorted(out, key=lambda t: (t[0], -1 if t[1] is None else t[1], t[2]))


def _expected_errors(paths: dict[str, Path]) -> dict[str, str]:
    """The one-line errors, built from the same operations the plug-ins fail in."""
    with pytest.raises(ZeroDivisionError) as zero:
        _ = 1 / 0
    with pytest.raises(ZeroDivisionError) as view:
        engine_faults.FaultyView("v").to_json()
    with pytest.raises(TypeError) as unpicklable:
        pickle.dumps(types.MappingProxyType({}))
    return {
        "zdiv": f"{paths['zdiv']}: sampler 'engine_faults:zero_div' failed: "
        f"ZeroDivisionError: {zero.value}",
        "view": f"{paths['view']}: ZeroDivisionError: {view.value}",
        "close": f"{paths['close']}: ZeroDivisionError: {zero.value}",
        "pickle": f"{paths['pickle']}: TypeError: {unpicklable.value}",
    }


@pytest.mark.parametrize("workers", [1, 0])
def test_an_exception_fails_its_clip_and_the_worker_goes_on(
    inputs: dict[str, Path], workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    errors = _expected_errors(inputs)
    eng = LocalEngine(workers=workers)
    jobs = _run(eng, *inputs.values())
    got = _summary(jobs)
    s = {k: str(p) for k, p in inputs.items()}
    expected = [
        (s["good"], 0, "ok", None),
        (s["good"], 1, "ok", None),
        (s["good"], 2, "ok", None),
        (s["zdiv"], 0, "ok", None),
        (s["zdiv"], 1, "failed", errors["zdiv"]),
        (s["zdiv"], 2, "ok", None),
        # closing fails after every clip was read: a warning, the clips' records stand
        (s["close"], 0, "ok", None),
        (s["close"], 1, "ok", None),
        (s["close"], 2, "ok", None),
        (s["pickle"], 0, "ok", None),
        # only a clip that crosses to another process has to be pickled
        (s["pickle"], 1, "failed", errors["pickle"]) if workers else (s["pickle"], 1, "ok", None),
        (s["pickle"], 2, "ok", None),
        (s["view"], 0, "ok", None),
        (s["view"], 1, "failed", errors["view"]),
        (s["view"], 2, "ok", None),
    ]
    assert got == sorted(expected, key=lambda t: (t[0], -1 if t[1] is None else t[1], t[2]))
    # one process did it all: nothing was lost, killed or restarted
    assert eng.restarts == 0
    assert not [r for r in caplog.records if "decoder" in r.getMessage()]
    by = {(j.source, (j.clip or {}).get("index")): j.record() for j in jobs}
    assert by[(s["view"], 1)].extra["stage"] == "decode"
    if workers:
        assert by[(s["pickle"], 1)].extra["stage"] == "send"
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warned] == [f"closing failed: {errors['close']}"]
    # every record has its own resume key; a failed clip keeps the key of its clip
    keys = [j.key for j in jobs]
    assert all(keys) and len(set(keys)) == len(keys)
    inline = {
        (j.source, (j.clip or {}).get("index")): j.key
        for j in _run(LocalEngine(workers=0), inputs["view"])
    }
    assert by[(s["view"], 1)].key == inline[(s["view"], 1)]
    for j in jobs:
        assert j.ok == (j.record().status == "ok")
        if j.ok:
            assert j.batch is not None and len(j.batch) == 3


def test_the_traceback_is_logged_at_debug(
    inputs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="framepipe")
    eng = LocalEngine(workers=1)
    jobs = _run(eng, inputs["view"])
    assert [j.record().status for j in jobs].count("failed") == 1
    debug = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG and "unexpected error" in r.getMessage()
    ]
    assert len(debug) == 1, debug
    assert str(inputs["view"]) in debug[0]
    assert "Traceback" in debug[0] and "to_json" in debug[0] and "ZeroDivisionError" in debug[0]


def test_a_done_clip_is_skipped_once_when_the_input_is_reopened(inputs: dict[str, Path]) -> None:
    first = _run(LocalEngine(workers=0), inputs["view"])
    done = frozenset(j.key for j in first if j.ok and j.clip["index"] == 0)  # type: ignore[index]
    assert len(done) == 1
    for workers in (0, 1):
        eng = LocalEngine(workers=workers)
        rest = _run(eng, inputs["view"], done=done)
        # clip 1 fails and clip 2 is still read; clip 0 is counted as done once
        assert eng.skipped == 1
        assert sorted((j.clip or {})["index"] for j in rest) == [1, 2]


def test_a_process_that_really_dies_is_still_replaced(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    bad = engine_plugins.make_video(tmp_path / "x_exit.mp4", 30, seed=4)
    cfg = SampleConfig(
        n=3,
        sampler="engine_plugins:misbehaving",
        sampler_params={"bad_clip": 1},
        clip_seconds=0.34,
    )
    eng = LocalEngine(workers=1)
    found, _ = discover([bad])
    jobs = list(eng.jobs((EngineTask(i, {"model": "x"}) for i in found), _work(cfg, 60)))
    failed = [j.record() for j in jobs if j.record().status != "ok"]
    assert len(failed) == 1 and failed[0].error is not None
    assert "exited with status 3" in failed[0].error
    assert eng.restarts == 1


UNGUARDED_SCRIPT = """
from framepipe import SampleConfig, sample

summary = sample([{video!r}], {out!r}, SampleConfig(n=2), workers={workers})
print("done", summary.done)
"""


@pytest.mark.parametrize("workers", [1, 0])
def test_a_script_without_the_main_guard_is_told_so_in_one_line(
    videos: Path, tmp_path: Path, workers: int
) -> None:
    """The README's ``sample`` example run as a script without ``if __name__ ==
    "__main__":``: spawn runs the script again in every decoding process, where the run
    would start processes of its own. The child ends quietly and the caller gets one
    ConfigError saying what to do (not a traceback per process, three starts per worker,
    and an AssertionError from stopping a process that never started); with
    ``workers=0`` no process starts and the script runs."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    out = tmp_path / "out"
    script.write_text(
        UNGUARDED_SCRIPT.format(video=str(videos / "c.mp4"), out=str(out), workers=workers)
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    if workers == 0:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["done", "1"]
        return
    assert proc.returncode == 1
    assert proc.stdout == ""  # the script's print never ran, in the parent or a child
    assert proc.stderr.count("Traceback") == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("framepipe.errors.ConfigError: ")
    assert 'if __name__ == "__main__":' in last and "workers=0" in last


NOTEBOOK_CELL = """
import sys
from framepipe import SampleConfig, register_sampler, sample

def firsts(info, clip, *, n, source=None, **params):
    return list(range(clip.start_frame, clip.start_frame + n))

register_sampler("cell_firsts")(firsts)
for sampler in (firsts, "cell_firsts", lambda info, clip, *, n, **kw: [0] * n):
    try:
        sample([{video!r}], {out!r}, SampleConfig(n=2, sampler=sampler))
    except Exception as exc:
        print(type(exc).__name__, exc, file=sys.stderr)
print("inline", sample([{video!r}], {out!r}, SampleConfig(n=2, sampler=firsts), workers=0).done)
"""


def test_a_sampler_defined_in_a_notebook_cell_is_refused_in_one_line_naming_it(
    videos: Path, tmp_path: Path
) -> None:
    """A sampler defined in a notebook (``__main__`` that spawned processes cannot import;
    ``python -c`` is the same) made every decoding process die at its start with a
    traceback of its own, then ``decoder processes die at start``; a lambda gave a raw
    PicklingError. Each is one ConfigError naming it and what to do; ``workers=0`` runs."""
    import subprocess
    import sys

    cell = NOTEBOOK_CELL.format(video=str(videos / "c.mp4"), out=str(tmp_path / "out"))
    proc = subprocess.run(
        [sys.executable, "-c", cell], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["inline", "1"]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 3, proc.stderr
    for line in lines[:2]:
        assert line.startswith("ConfigError firsts is defined in __main__ (a notebook")
        assert "put it in a module" in line and "workers=0" in line
    assert lines[2].startswith("ConfigError the decoding worker processes cannot be sent")
    assert "PicklingError" in lines[2] and "workers=0" in lines[2]
