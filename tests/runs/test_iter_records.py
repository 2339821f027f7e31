"""``iter_caption``, ``Pipeline.iter`` and ``iter_sample``: a run's records one by one, as
they finish, in a ``for`` loop: the same records as the run's output, written before they
are handed over, and a loop left early stops the run cleanly (no decoder left, an output
that a later run resumes)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from generator_doubles import EchoGenerator

from framepipe import Pipeline, SampleConfig, caption, iter_caption, iter_sample, sample
from framepipe.errors import ConfigError, OutputError, StopRunError
from framepipe.generate import GenerationSettings, ModelConfig
from framepipe.output import read_records

ONE_AT_A_TIME = GenerationSettings(batch_size=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("iter_videos")
    for k in range(4):
        engine_plugins.make_video(d / f"v{k}.mp4", 20 + 5 * k, seed=k)
    return d


def _without_times(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "timings_s"}


def _no_run_left() -> None:
    assert not multiprocessing.active_children()
    assert not [t for t in threading.enumerate() if t.name == "framepipe-engine"]


def _echo_pipeline(gen: EchoGenerator | None = None) -> Pipeline:
    return Pipeline(
        generator=gen or EchoGenerator(),  # type: ignore[arg-type]
        settings=ONE_AT_A_TIME,
        sample=SampleConfig(n=2),
        workers=2,
    )


@pytest.mark.usefixtures("one_torch_thread")
def test_iter_caption_yields_the_records_caption_writes(
    tiny_model_dir: Path, videos: Path, tmp_path: Path
) -> None:
    """The tiny random model: the records the loop gets are the records ``caption()``
    returns and writes for the same inputs, and the loop's output file holds them too."""
    opts: dict[str, Any] = dict(
        model=ModelConfig(model=str(tiny_model_dir), dtype="float32", device="cpu"),
        settings={"max_new_tokens": 4, "batch_size": 2},
        sample=SampleConfig(n=2),
        questions=["What happens?"],
        workers=1,
    )
    ran = caption([videos], tmp_path / "run.jsonl", **opts)
    looped = [r.to_json() for r in iter_caption([videos], tmp_path / "iter.jsonl", **opts)]
    by_source = sorted(looped, key=lambda r: r["source"])
    assert len(looped) == ran.done == 4 and not ran.failed
    assert [_without_times(r) for r in by_source] == [
        _without_times(r.to_json()) for r in sorted(ran.records, key=lambda r: r.source)
    ]
    written = sorted(read_records(tmp_path / "iter.jsonl"), key=lambda r: r["source"])
    assert [_without_times(r) for r in written] == [_without_times(r) for r in by_source]


def test_records_arrive_while_later_clips_are_not_done(videos: Path, tmp_path: Path) -> None:
    """Nothing runs before the first record is asked for; the first record comes (already
    in the output) while the output holds no other clip's: the loop gets records as they
    finish, not after the run."""
    out = tmp_path / "r.jsonl"
    records = _echo_pipeline().iter([videos], out)
    assert not out.exists() and not multiprocessing.active_children()
    seen = []
    for rec in records:
        written = [r["source"] for r in read_records(out)]
        assert written == [*seen, rec.source]  # this one written, no later one yet
        seen.append(rec.source)
    assert len(seen) == 4
    _no_run_left()


def test_breaking_out_of_the_loop_stops_the_run_and_a_later_run_resumes(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    pipe = _echo_pipeline()
    got = []
    for rec in pipe.iter([videos], out):
        got.append(rec.source)
        break
    _no_run_left()
    assert [r["source"] for r in read_records(out)] == got
    s = pipe.run([videos], out)
    assert (s.done, s.skipped) == (3, 1)
    assert sorted(r["source"] for r in read_records(out)) == sorted(
        str(p) for p in videos.glob("*.mp4")
    )


def test_ctrl_c_in_the_loop_body_stops_the_run(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        for _ in _echo_pipeline().iter([videos], out):
            raise KeyboardInterrupt
    _no_run_left()
    assert len(list(read_records(out))) == 1


class _ServerGone(EchoGenerator):
    """Answers one clip, then stops the run as a server that went away does."""

    def answer(self, requests: Any) -> Any:
        if self.batches:
            raise StopRunError("the server went away")
        return super().answer(requests)


def test_an_error_that_stops_the_run_is_raised_in_the_loop(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    got = []
    with pytest.raises(StopRunError, match="the server went away"):
        for rec in _echo_pipeline(_ServerGone()).iter([videos], out):
            got.append(rec.source)
    assert len(got) == 1
    _no_run_left()
    assert [r["source"] for r in read_records(out)] == got


def test_the_generator_returns_the_runs_summary(videos: Path) -> None:
    records = _echo_pipeline().iter([videos])
    got = []
    while True:
        try:
            got.append(next(records))
        except StopIteration as end:
            summary = end.value
            break
    assert summary.done == len(got) == 4 and summary.records == []  # nothing kept


def test_iter_sample_yields_the_manifests_records_and_stops_on_break(
    videos: Path, tmp_path: Path
) -> None:
    ran = sample([videos], tmp_path / "ran", 2, workers=2)
    looped = list(iter_sample([videos], tmp_path / "looped", 2, workers=2))
    assert len(looped) == ran.done == 4

    def comparable(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted((_without_times(r) for r in recs), key=lambda r: r["source"])

    assert comparable([r.to_json() for r in looped]) == comparable(
        [r.to_json() for r in ran.records]
    )
    out = tmp_path / "stopped"
    for _ in iter_sample([videos], out, 2, workers=2):
        break
    _no_run_left()
    assert len(list(read_records(out / "manifest.jsonl"))) == 1
    assert (sample([videos], out, 2).done, len(list(read_records(out / "manifest.jsonl")))) == (
        3,
        4,
    )


HELD_AND_LEFT = """
import sys
from framepipe import iter_sample

if __name__ == "__main__":
    run = iter_sample([sys.argv[1]], sys.argv[2], 2, workers=1)  # held in a variable
    for rec in run:
        break
    print("left the loop", flush=True)
"""


def test_a_script_that_leaves_the_loop_with_the_run_in_a_variable_exits(
    videos: Path, tmp_path: Path
) -> None:
    # the generator is not closed by the ``break`` (a variable holds it): at exit Python
    # joined the decoder process after a SIGTERM, which a decoder ignores: it never exited
    script = tmp_path / "held.py"
    script.write_text(HELD_AND_LEFT)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), str(videos), str(out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "left the loop" in done.stdout
    # and its output was tidied while Python still worked (not as its modules went away)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert len(list(read_records(out / "manifest.jsonl"))) == 1
    assert sample([videos], out, 2).done == 3


def test_iter_sample_refuses_a_bad_setting_at_the_call(tmp_path: Path) -> None:
    """``iter_sample(..., 0)`` was refused only at the first ``next()`` (the generator's
    body had not run): the error is at the call, as ``sample``'s is, and nothing is made."""
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"n \(0\) must be >= 1"):
        iter_sample([tmp_path], tmp_path / "out", 0)
    with pytest.raises(ConfigError, match="no_such_sampler"):
        iter_sample([tmp_path], tmp_path / "out", SampleConfig(n=2, sampler="no_such_sampler"))
    with pytest.raises(OutputError, match="not a folder"):
        iter_sample([tmp_path], tmp_path / "file" / "out", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_pipeline_iter_refuses_an_unwritable_output_at_the_call(
    videos: Path, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    pipe = _echo_pipeline()
    with pytest.raises(OutputError, match="is not a folder"):
        pipe.iter([videos], tmp_path / "file" / "r.jsonl")
    with pytest.raises(OutputError, match="frames folder"):
        Pipeline(generator=EchoGenerator(), frames_dir=tmp_path / "file").iter([videos])  # type: ignore[arg-type]
    pipe.sample = SampleConfig(n=2, sampler="no_such_sampler")
    with pytest.raises(ConfigError, match="no_such_sampler"):
        pipe.iter([videos])


def _interrupt_between_records() -> Any:
    """A trace function that raises KeyboardInterrupt in the frame of an eager run
    (``sample``, ``Pipeline.run``: the ``run`` that :func:`~framepipe.runs.common.eager`
    makes) once it has one record: Ctrl-C landing between two ``next()``."""
    calls = 0

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal calls
        if event == "line" and "next(gen)" in _line(frame):
            calls += 1
            if calls == 2:
                sys.settrace(None)
                raise KeyboardInterrupt
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_name == "run" and frame.f_code.co_filename.endswith("common.py"):
            return local
        return None

    return tracer


def _line(frame: Any) -> str:
    import linecache

    return linecache.getline(frame.f_code.co_filename, frame.f_lineno)


@pytest.mark.parametrize("run", ["sample", "run"])
def test_ctrl_c_between_records_of_an_eager_run_stops_it_at_once(
    videos: Path, tmp_path: Path, run: str
) -> None:
    """Ctrl-C landing in ``sample()``/``Pipeline.run()`` between two records (not inside
    the run's generator) left the generator suspended, held by the traceback (a REPL keeps
    the last one): its decoders ran on and its output stayed open. It is closed at once."""
    out = tmp_path / "out"
    previous = sys.gettrace()
    sys.settrace(_interrupt_between_records())
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            if run == "sample":
                sample([videos], out, 2, workers=1)
            else:
                _echo_pipeline().run([videos], out / "r.jsonl")
    finally:
        sys.settrace(previous)
    assert stopped.tb is not None  # the traceback, and the frames it holds, still there
    _no_run_left()
    records = out / ("manifest.jsonl" if run == "sample" else "r.jsonl")
    assert len(list(read_records(records))) == 1
