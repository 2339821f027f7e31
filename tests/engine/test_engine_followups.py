"""The local engine: an ordinary exception inside a decoder (a plug-in's bug, a library
error) fails its clip with a one-line ``<file>: <Type>: <message>`` error, and the same
worker process goes on with the next clip; ``sample(keep_records=False)`` keeps no records."""

from __future__ import annotations

import logging
import pickle
import types
from pathlib import Path

import engine_faults
import engine_plugins
import pytest

from framepipe.config import SampleConfig
from framepipe.discover import discover
from framepipe.engine import EngineTask, LocalEngine
from framepipe.stages import ClipJob

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


def _run(eng: LocalEngine, *paths: Path) -> list[ClipJob]:
    found, _ = discover(paths)
    return list(eng.run(EngineTask(i, {"model": "x"}) for i in found))


def _summary(jobs: list[ClipJob]) -> list[tuple[str, int | None, str, str | None]]:
    out = []
    for j in jobs:
        r = j.record
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
        "zdiv": f"{paths['zdiv']}: ZeroDivisionError: {zero.value}",
        "view": f"{paths['view']}: ZeroDivisionError: {view.value}",
        "close": f"{paths['close']}: ZeroDivisionError: {zero.value}",
        "pickle": f"{paths['pickle']}: TypeError: {unpicklable.value}",
    }


@pytest.mark.parametrize("workers", [1, 0])
def test_an_exception_fails_its_clip_and_the_worker_goes_on(
    inputs: dict[str, Path], workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    errors = _expected_errors(inputs)
    eng = LocalEngine(CFG, workers=workers, decode_timeout_s=60)
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
        # closing fails after every clip was read: the input is failed as a whole
        (s["close"], None, "failed", errors["close"]),
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
    by = {(j.record.source, (j.record.clip or {}).get("index")): j.record for j in jobs}
    assert by[(s["view"], 1)].extra["stage"] == "decode"
    if workers:
        assert by[(s["pickle"], 1)].extra["stage"] == "send"
    assert by[(s["close"], None)].extra["stage"] == "input"
    # every record has its own resume key; a failed clip keeps the key of its clip
    keys = [j.record.key for j in jobs]
    assert all(keys) and len(set(keys)) == len(keys)
    inline = {
        (j.record.source, (j.record.clip or {}).get("index")): j.record.key
        for j in _run(LocalEngine(CFG, workers=0), inputs["view"])
    }
    assert by[(s["view"], 1)].key == inline[(s["view"], 1)]
    for j in jobs:
        assert j.ok == (j.record.status == "ok")
        if j.ok:
            assert j.batch is not None and len(j.batch) == 3


def test_the_traceback_is_logged_at_debug(
    inputs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="framepipe")
    eng = LocalEngine(CFG, workers=1, decode_timeout_s=60)
    jobs = _run(eng, inputs["view"])
    assert [j.record.status for j in jobs].count("failed") == 1
    debug = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG and "unexpected error" in r.getMessage()
    ]
    assert len(debug) == 1, debug
    assert str(inputs["view"]) in debug[0]
    assert "Traceback" in debug[0] and "to_json" in debug[0] and "ZeroDivisionError" in debug[0]


def test_a_done_clip_is_skipped_once_when_the_input_is_reopened(inputs: dict[str, Path]) -> None:
    first = _run(LocalEngine(CFG, workers=0), inputs["view"])
    done = {j.record.key for j in first if j.ok and j.record.clip["index"] == 0}  # type: ignore[index]
    assert len(done) == 1
    for workers in (0, 1):
        eng = LocalEngine(CFG, workers=workers, done_keys=done)
        rest = _run(eng, inputs["view"])
        # the input is opened again after clip 1 fails; clip 0 is counted as done once
        assert eng.skipped == 1
        assert sorted((j.record.clip or {})["index"] for j in rest) == [1, 2]


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
    eng = LocalEngine(cfg, workers=1, decode_timeout_s=60)
    jobs = _run(eng, bad)
    failed = [j.record for j in jobs if j.record.status != "ok"]
    assert len(failed) == 1 and failed[0].error is not None
    assert "exited with status 3" in failed[0].error
    assert eng.restarts == 1
