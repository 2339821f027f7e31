"""``caption`` end to end: records, resume, failures, errors before loading, the CLI, and an
interrupted run.

Two generators are used. ``EchoGenerator`` is a TEST DOUBLE (it lives only here): its answer
spells out the mean value of every frame it was given, so the tests can check that each
clip's answer was made from exactly that clip's frames, and it counts its batches. The
tests marked ``tiny`` run the real generator on the project's tiny random LLaVA model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner
from generator_doubles import EchoAnswer, EchoGenerator, frames_signature

from framepipe.config import SampleConfig
from framepipe.errors import ConfigError, ModelLoadError, OutputError
from framepipe.output import read_records
from framepipe.questions import default_question
from framepipe.runs.caption import RANDOM_WEIGHTS_NOTE, CaptionSummary, Pipeline, caption
from framepipe.runs.sample import sample
from framepipe.sources import open_source

TESTS = Path(__file__).resolve().parents[1]


# -- media ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("caption_videos")
    for k in range(4):
        engine_plugins.make_video(d / f"v{k}.mp4", 20 + 5 * k, seed=k)
    return d


def _run(paths: Sequence[Path | str], gen: EchoGenerator, **kw: Any) -> CaptionSummary:
    run_kw = {k: kw.pop(k) for k in ("output", "overwrite") if k in kw}
    kw.setdefault("sample", SampleConfig(n=3))
    kw.setdefault("workers", 0)  # in-process decoding unless a test is about the workers
    pipe = Pipeline(generator=gen, **kw)  # type: ignore[arg-type]
    return pipe.run(paths, run_kw.pop("output", None), **run_kw)


def _expected_answer(rec: dict[str, Any], question: str) -> str:
    with open_source(rec["source"]) as src:
        batch = src.read(rec["indices"])
    return f"{question} => {frames_signature(batch.images())}"


# -- records ----------------------------------------------------------------------------------
def test_records_hold_the_manifest_model_and_answers(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    gen = EchoGenerator()
    qs = ["What is in the frames?", "What colour dominates?"]
    s = _run([videos], gen, questions=qs, system="Be brief.", output=out, workers=1)
    assert (s.done, s.skipped, s.failed) == (4, 0, [])
    recs = list(read_records(out))
    assert [r["source"] for r in recs] == [str(videos / f"v{k}.mp4") for k in range(4)]
    for r in recs:
        assert r["status"] == "ok" and r["error"] is None
        assert r["kind"] == "video" and r["clip"]["label"] == "whole"
        assert r["sampler"]["name"] == "uniform" and len(r["indices"]) == 3
        assert len(r["timestamps_s"]) == 3
        assert r["questions"] == qs
        assert r["answers"] == [_expected_answer(r, q) for q in qs]
        assert r["prompt"] == f"Be brief.|3 images|{qs[0]}" and r["system"] == "Be brief."
        assert r["model"]["id"] == "test/echo" and r["model"]["random_weights"] is True
        assert r["note"] == RANDOM_WEIGHTS_NOTE
        assert r["generation"]["max_new_tokens"] == 128
        assert {"decode_s", "generate_s"} <= set(r["timings_s"])
        assert r["tokens"] == {"prompt": 7, "new": [1, 1]}
        assert r["key"]
    assert [r.to_json() for r in s.records] == recs


def test_batches_are_filled_and_answers_do_not_depend_on_them(videos: Path) -> None:
    from framepipe.generate import GenerationSettings

    answers = {}
    for bs in (1, 3):
        gen = EchoGenerator()
        s = _run([videos], gen, settings=GenerationSettings(batch_size=bs), workers=2)
        assert sorted(gen.batches, reverse=True) == ([1, 1, 1, 1] if bs == 1 else [3, 1])
        answers[bs] = {r.source: r.answers for r in s.records}
    assert answers[1] == answers[3]


def test_default_question_per_kind(videos: Path) -> None:
    s = _run([videos / "v0.mp4"], EchoGenerator())
    (rec,) = s.records
    assert rec.questions == [default_question("video")]


def test_frames_dir_paths_are_relative_to_the_output(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "results.jsonl"
    s = _run([videos / "v1.mp4"], EchoGenerator(), output=out, frames_dir=tmp_path / "frames")
    (rec,) = s.records
    assert rec.frames is not None and len(rec.frames) == 3 and rec.contact_sheet
    for p in [*rec.frames, rec.contact_sheet]:
        assert not os.path.isabs(p) and (out.parent / p).is_file()


@pytest.mark.parametrize("command", ["caption", "sample"])
def test_frames_that_cannot_be_written_fail_the_clip_naming_the_frames_folder(
    videos: Path, tmp_path: Path, command: str
) -> None:
    from framepipe.runs.common import clip_dir_name
    from framepipe.runs.sample import sample

    src = videos / "v1.mp4"
    frames = tmp_path / "frames"
    frames.mkdir()  # where the clip's folder goes, a file (as a full disk, a quota, EROFS)
    (frames / clip_dir_name(str(src), 0).split("/")[0]).write_text("in the way")
    if command == "caption":
        s = _run([src], EchoGenerator(), output=tmp_path / "r.jsonl", frames_dir=frames)
    else:
        s = sample([src], frames, SampleConfig(n=3), workers=0)
    (rec,) = s.records
    assert rec.status == "failed" and rec.error is not None
    assert rec.error.startswith(f"{src}: cannot write frames in {frames} (")
    assert "\n" not in rec.error


# -- resume --------------------------------------------------------------------------------------
def test_resume_appends_only_missing_clips(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    _run([videos], EchoGenerator(), output=out, questions=["Q?"])
    lines = out.read_text().splitlines()
    # an interrupted run: the last record is missing and the one before it is torn
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    gen = EchoGenerator()
    s = _run([videos], gen, output=out, questions=["Q?"])
    assert (s.done, s.skipped) == (2, 2) and gen.batches == [2]
    recs = list(read_records(out))
    assert len(recs) == 4 and len({r["key"] for r in recs}) == 4
    assert sorted(r["source"] for r in recs) == sorted(str(p) for p in videos.glob("*.mp4"))
    # everything done: nothing is answered again
    gen = EchoGenerator()
    s = _run([videos], gen, output=out, questions=["Q?"])
    assert (s.done, s.skipped, gen.batches) == (0, 4, [])
    # other settings are other keys: a new question, another n
    s = _run([videos / "v0.mp4"], EchoGenerator(), output=out, questions=["Other?"])
    assert (s.done, s.skipped) == (1, 0)
    s = _run([videos / "v0.mp4"], EchoGenerator(), output=out, questions=["Q?"],
             sample=SampleConfig(n=2))  # fmt: skip
    assert (s.done, s.skipped) == (1, 0)
    # --overwrite starts afresh
    s = _run([videos], EchoGenerator(), output=out, questions=["Q?"], overwrite=True)
    assert (s.done, s.skipped) == (4, 0) and len(list(read_records(out))) == 4


# -- failures ----------------------------------------------------------------------------------
def test_failed_clips_are_recorded_and_the_run_goes_on(videos: Path, tmp_path: Path) -> None:
    from framepipe.generate import GenerationSettings

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    missing = tmp_path / "missing.mp4"
    # the generator fails on v2's frames only, inside a batch with others
    with open_source(videos / "v2.mp4") as src:
        from framepipe.read_clips import select

        info = src.info()
        from framepipe.clips import whole_clip

        sel = select(src, info, whole_clip(info), SampleConfig(n=3))
        bad_sig = frames_signature(src.read(list(sel.indices)).images())
    gen = EchoGenerator(fail_signature=bad_sig)
    out = tmp_path / "r.jsonl"
    s = _run(
        [videos, broken, missing],
        gen,
        output=out,
        settings=GenerationSettings(batch_size=4),
    )
    recs = {Path(r["source"]).name: r for r in read_records(out)}
    assert set(recs) == {"v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4", "broken.mp4", "missing.mp4"}
    failed = {k for k, r in recs.items() if r["status"] == "failed"}
    assert failed == {"v2.mp4", "broken.mp4", "missing.mp4"}
    assert s.done == 3 and len(s.failed) == 3
    for name in failed:
        err = recs[name]["error"]
        assert isinstance(err, str) and "\n" not in err and recs[name]["source"] in err
    assert "cannot be answered" in recs["v2.mp4"]["error"]
    assert recs["v2.mp4"]["stage"] == "generate" and recs["v2.mp4"]["indices"] == list(sel.indices)
    assert recs["v1.mp4"]["answers"] == [
        _expected_answer(recs["v1.mp4"], default_question("video"))
    ]


class ShortGenerator(EchoGenerator):
    """TEST DOUBLE that leaves out the last answer of every call."""

    def answer(self, requests: Sequence[Any]) -> list[EchoAnswer]:
        return super().answer(requests)[:-1]


def test_a_generator_that_gives_too_few_answers_fails_the_clips(
    videos: Path, tmp_path: Path
) -> None:
    from framepipe.generate import GenerationSettings

    out = tmp_path / "r.jsonl"
    s = _run([videos], ShortGenerator(), output=out, settings=GenerationSettings(batch_size=2))
    recs = list(read_records(out))
    assert len(recs) == 4 and s.done == 0 and len(s.failed) == 4
    for r in recs:
        assert r["status"] == "failed" and r["answers"] is None
        assert "1 answers for 2 clips" in r["error"] or "0 answers for 1 clips" in r["error"]


def test_a_hung_decoder_fails_its_clip_only(videos: Path, tmp_path: Path) -> None:
    hang = engine_plugins.make_video(tmp_path / "x_hang.mp4", 20, seed=9)
    s = _run(
        [videos / "v0.mp4", hang, videos / "v1.mp4"],
        EchoGenerator(),
        sample=SampleConfig(n=2, sampler="engine_plugins:misbehaving"),
        decode_timeout_s=3.0,
        workers=2,
    )
    by = {Path(r.source).name: r for r in s.records}
    assert by["v0.mp4"].status == by["v1.mp4"].status == "ok"
    assert by["x_hang.mp4"].status == "failed"
    assert "did not finish within 3 s" in (by["x_hang.mp4"].error or "")


def test_ctrl_c_in_the_main_process(videos: Path, tmp_path: Path) -> None:
    """KeyboardInterrupt while answering: records so far are whole, workers are stopped, and
    the next run completes the file."""
    out = tmp_path / "r.jsonl"

    def interrupt(rec: Any) -> None:
        raise KeyboardInterrupt

    from framepipe.generate import GenerationSettings

    pipe = Pipeline(
        generator=EchoGenerator(),  # type: ignore[arg-type]
        settings=GenerationSettings(batch_size=1),
        sample=SampleConfig(n=2),
        workers=2,
    )
    with pytest.raises(KeyboardInterrupt):
        pipe.run([videos], out, on_record=interrupt)
    assert len(list(read_records(out))) == 1
    import multiprocessing

    assert not multiprocessing.active_children()
    s = pipe.run([videos], out)
    assert (s.done, s.skipped) == (3, 1) and len(list(read_records(out))) == 4


# -- errors before any heavy work ---------------------------------------------------------------
class _NeverLoaded(EchoGenerator):
    def describe(self) -> dict[str, Any]:
        raise AssertionError("the model was used although the run should have stopped")


@pytest.mark.parametrize("questions", [[""], ["ok", "  "]])
def test_empty_question(questions: list[str]) -> None:
    with pytest.raises(ConfigError, match="empty"):
        Pipeline(generator=_NeverLoaded(), questions=questions)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"questions": 3}, r"^questions must be a str or a list of str, not int$"),
        ({"questions": b"What?"}, r"^questions must be a str or a list of str, not bytes$"),
        ({"questions": ["What?", 2]}, r"^question 2 must be a str, not int$"),
        ({"system": ["Be terse."]}, r"^the system prompt must be a str, not list$"),
    ],
)
def test_questions_or_a_system_prompt_that_are_not_text_are_a_type_error_naming_them(
    given: dict[str, Any], message: str
) -> None:
    """``questions=3`` said "'int' object is not iterable", ``system=[...]`` an
    AttributeError on ``strip``, and a number among the questions "question 2 is empty"."""
    with pytest.raises(TypeError, match=message):
        Pipeline(generator=_NeverLoaded(), **given)


def test_unwritable_output(videos: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        _run([videos], _NeverLoaded(), output=a_file / "results.jsonl")
    with pytest.raises(OutputError, match="is a folder"):
        _run([videos], _NeverLoaded(), output=tmp_path)


class _FailsOnLoad(EchoGenerator):
    """Its config reads fine (the resume key), then loading fails (second describe())."""

    calls = 0

    def describe(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls > 1:
            raise ModelLoadError("test/echo: the weights are not there")
        return super().describe()


def test_a_model_that_fails_to_load_leaves_no_empty_output(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with pytest.raises(ModelLoadError, match="weights"):
        _run([videos / "v0.mp4"], _FailsOnLoad(), output=out, workers=1)
    assert not out.exists()
    out.write_text("")  # an existing file is left alone
    with pytest.raises(ModelLoadError):
        _run([videos / "v0.mp4"], _FailsOnLoad(), output=out, workers=1)
    assert out.exists()


def test_no_inputs_loads_nothing(tmp_path: Path) -> None:
    s = _run([], _NeverLoaded(), output=tmp_path / "r.jsonl")
    assert s.done == 0 and not s.records


def test_api_caption_without_output(videos: Path) -> None:
    pipe = Pipeline(generator=EchoGenerator(), sample=SampleConfig(n=2), workers=0)  # type: ignore[arg-type]
    s = pipe.run([videos / "v3.mp4"], None, overwrite=False)
    assert s.done == 1 and s.records[0].answers
    assert callable(caption)


# -- with the real generator on the tiny random model ------------------------------------------
TINY_SETTINGS = {"max_new_tokens": 6, "batch_size": 4}


@pytest.fixture(scope="module")
def tiny_generator(tiny_model_dir: Path) -> Any:
    from framepipe.generate import GenerationSettings, Generator, ModelConfig, ModelSpec

    cfg = ModelConfig(model=str(tiny_model_dir), dtype="float32", device="cpu")
    spec = ModelSpec.inspect(cfg)
    return Generator.load(cfg, GenerationSettings(**TINY_SETTINGS), spec=spec)  # type: ignore[arg-type]


def _tiny_answers(gen: Any, paths: Sequence[Path], questions: list[str], batch_size: int) -> dict:
    from dataclasses import replace

    pipe = Pipeline(
        generator=gen,
        settings=replace(gen.settings, batch_size=batch_size),
        sample=SampleConfig(n=2),
        questions=questions,
        workers=0,
    )
    s = pipe.run(paths, None)
    assert s.done == len(paths) and not s.failed
    return {r.source: r.answers for r in s.records}


def test_tiny_batched_answers_equal_unbatched(tiny_generator: Any, videos: Path) -> None:
    paths = sorted(videos.glob("*.mp4"))
    one = _tiny_answers(tiny_generator, paths, ["Describe the video."], batch_size=1)
    four = _tiny_answers(tiny_generator, paths, ["Describe the video."], batch_size=4)
    assert one == four
    assert len({a[0] for a in one.values()}) > 1  # different clips, different answers


def test_tiny_several_questions_equal_separate_runs(tiny_generator: Any, videos: Path) -> None:
    paths = sorted(videos.glob("*.mp4"))[:2]
    qs = ["What happens?", "Which colours are there?"]
    together = _tiny_answers(tiny_generator, paths, qs, batch_size=2)
    for k, q in enumerate(qs):
        alone = _tiny_answers(tiny_generator, paths, [q], batch_size=2)
        assert {src: [a[k]] for src, a in together.items()} == alone


def _cli(*args: str) -> Any:
    from framepipe.cli import cli

    return CliRunner().invoke(cli, ["caption", *args], catch_exceptions=False)


def test_tiny_cli(tiny_model_dir: Path, videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    qfile = tmp_path / "questions.txt"
    qfile.write_text("# asked after -q\n\nColours?\n")
    args = [str(videos / "v0.mp4"), str(videos / "v1.mp4"), "-n", "2", "--model",
            str(tiny_model_dir), "-q", "What is shown?", "--questions-file", str(qfile),
            "-o", str(out),
            "--max-new-tokens", "4", "--dtype", "float32", "--workers", "1",
            "--frames-dir", str(tmp_path / "frames")]  # fmt: skip
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert "2 clip(s) answered, 0 already done, 0 failed" in res.output
    assert "random weights" in res.output
    recs = list(read_records(out))
    assert len(recs) == 2
    for r in recs:
        assert r["status"] == "ok" and len(r["answers"]) == 2
        assert r["questions"] == ["What is shown?", "Colours?"]
        assert r["prompt"].count("<image>") == 2 and "What is shown?" in r["prompt"]
        assert r["model"]["path"] == str(tiny_model_dir) and r["model"]["random_weights"]
        assert r["model"]["dtype"] == "float32" and r["note"] == RANDOM_WEIGHTS_NOTE
        assert r["generation"]["max_new_tokens"] == 4
        assert all(n <= 4 for n in r["tokens"]["new"])
        assert r["truncated"] == [n == 4 for n in r["tokens"]["new"]]  # cut at the limit
        assert len(r["frames"]) == 2
    res = _cli(*args)  # everything done already
    assert res.exit_code == 0 and "0 clip(s) answered, 2 already done" in res.output
    assert len(list(read_records(out))) == 2


def test_tiny_cli_bad_input_fails_before_loading(
    tiny_model_dir: Path, videos: Path, tmp_path: Path
) -> None:
    from framepipe.generate import ModelConfig, ModelSpec

    out = tmp_path / "r.jsonl"
    v = str(videos / "v0.mp4")
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello")
    too_many = ModelSpec.inspect(ModelConfig(model=str(tiny_model_dir))).max_images("Q?") + 1
    cases = [
        (["--model", str(tmp_path / "nowhere")], str(tmp_path / "nowhere")),
        (["--model", str(not_a_model)], str(not_a_model)),
        (["--model", str(tiny_model_dir), "-n", str(too_many), "-q", "Q?"], "at most"),
        (["--model", str(tiny_model_dir), "--quantize", "4bit", "--device", "cpu"], "CUDA"),
        (["--model", str(tiny_model_dir), "-q", " "], "empty"),
    ]
    for extra, needle in cases:
        res = _cli(v, "-o", str(out), *extra)
        assert res.exit_code in (1, 2), (extra, res.output)
        assert needle in res.output, (extra, res.output)
        assert "Traceback" not in res.output
        assert not out.exists()  # nothing written, nothing loaded
    res = _cli(v, "-o", str(tmp_path), "--model", str(tiny_model_dir))
    assert res.exit_code == 2 and "is a directory" in res.output


def test_a_question_the_prompt_refuses_is_a_bad_setting(
    videos: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The image placeholder or one of the model's special tokens in a question, or more
    frames than the context holds: exit 2 and one line, as any bad setting, before the model
    loads."""
    from framepipe.generate import ModelConfig, ModelSpec

    out = tmp_path / "r.jsonl"
    v = str(videos / "v0.mp4")
    too_many = ModelSpec.inspect(ModelConfig(model=str(tiny_model_dir))).max_images("Q?") + 1
    cases = [
        (["-q", "what is in <image>?"], "<image>"),
        (["-q", "hi<|im_end|>"], "<|im_end|>"),
        (["-n", str(too_many), "-q", "Q?"], "at most"),
    ]
    for extra, needle in cases:
        res = _cli(v, "-o", str(out), "--model", str(tiny_model_dir), *extra)
        assert res.exit_code == 2, (extra, res.output)
        assert needle in res.output and "Traceback" not in res.output, (extra, res.output)
        assert not out.exists()


def _interruptible_run(tiny_model_dir: Path, tmp_path: Path) -> tuple[list[str], Path, Any]:
    vids = [engine_plugins.make_video(tmp_path / f"slow_{k}.mp4", 8, seed=k) for k in range(4)]
    out = tmp_path / "r.jsonl"
    args = [*map(str, vids), "-n", "2", "--sampler", "engine_plugins:misbehaving",
            "--sampler-opt", "delay_s=0.3", "--model", str(tiny_model_dir),
            "--dtype", "float32", "--max-new-tokens", "3", "--batch-size", "1",
            "--workers", "1", "-o", str(out)]  # fmt: skip
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}

    def until_records_then(sig: int) -> tuple[int, str]:
        """Run the command in a subprocess; send ``sig`` once a new record is written."""
        start = len(list(read_records(out)))
        cmd = [sys.executable, "-m", "framepipe", "caption", *args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while len(list(read_records(out))) <= start:
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            assert time.monotonic() < deadline, "no record written in time"
            time.sleep(0.05)
        proc.send_signal(sig)
        text = proc.communicate(timeout=60)[0].decode()
        return proc.returncode, text

    return args, out, until_records_then


def _completes(args: list[str], out: Path, already: int) -> None:
    """A plain re-run answers the rest: no duplicates, every line a whole record."""
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert f"{already} already done" in res.output
    recs = list(read_records(out))
    assert len(recs) == 4 and len({r["source"] for r in recs}) == 4
    assert all(r["status"] == "ok" for r in recs)
    for line in out.read_text().splitlines():
        json.loads(line)


def test_tiny_killed_run_leaves_valid_jsonl(tiny_model_dir: Path, tmp_path: Path) -> None:
    args, out, until_records_then = _interruptible_run(tiny_model_dir, tmp_path)
    code, _ = until_records_then(signal.SIGKILL)
    assert code == -signal.SIGKILL
    n = len(list(read_records(out)))
    assert 1 <= n < 4
    _completes(args, out, n)


@pytest.mark.slow
def test_tiny_ctrl_c_leaves_valid_jsonl(tiny_model_dir: Path, tmp_path: Path) -> None:
    args, out, until_records_then = _interruptible_run(tiny_model_dir, tmp_path)
    code, text = until_records_then(signal.SIGINT)
    assert code == 130, text[-2000:]
    assert "interrupted" in text and "Traceback" not in text
    n = len(list(read_records(out)))
    assert 1 <= n < 4
    _completes(args, out, n)


def test_tiny_resume_key_is_known_before_loading(tiny_model_dir: Path) -> None:
    from framepipe.generate import ModelConfig

    pipe = Pipeline(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    pipe.check()
    before = pipe.model_key()
    info = pipe.load().describe()
    assert pipe.model_key() == before
    named = [k for k in before if k != "weights"]
    assert {k: before[k] for k in named} == {k: info.get(k) for k in named}
    # a local model's files are part of the key: another model saved there is not "done"
    assert "model.safetensors" in [w[0] for w in before["weights"]]
    assert before["path"] == str(tiny_model_dir) and before["dtype"] == info["dtype"]


def test_cli_generation_defaults_are_the_settings_defaults() -> None:
    from click.testing import CliRunner

    from framepipe.cli import cli
    from framepipe.cli.caption import GENERATION_OPTIONS
    from framepipe.generate import GenerationSettings

    defaults = GenerationSettings()
    shown = " ".join(
        CliRunner().invoke(cli, ["caption", "--help"], terminal_width=500).output.split()
    )
    for name, (typ, text) in GENERATION_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        metavar = "INTEGER" if typ is int else "FLOAT"
        expected = f"{flag} {metavar} {text} [default: {getattr(defaults, name)}]"
        assert expected in shown, name


def test_questions_file(tmp_path: Path) -> None:
    import click

    from framepipe.cli.caption import read_questions_file

    p = tmp_path / "q.txt"
    p.write_text("  First?  \n# a comment\n\nSecond?\n")
    assert read_questions_file(str(p)) == ["First?", "Second?"]
    p.write_text("# nothing\n\n")
    with pytest.raises(click.BadParameter, match="no question"):
        read_questions_file(str(p))
    with pytest.raises(click.BadParameter, match="cannot read"):
        read_questions_file(str(tmp_path / "missing.txt"))


def test_tiny_cli_exit_status_1_when_a_clip_failed(
    tiny_model_dir: Path, videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    missing = tmp_path / "missing.mp4"
    res = _cli(str(videos / "v2.mp4"), str(missing), "-n", "2", "--model", str(tiny_model_dir),
               "--max-new-tokens", "2", "--workers", "1", "-o", str(out))  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "1 clip(s) answered, 0 already done, 1 failed" in res.output
    assert f"error: {missing}" in res.output
    recs = {Path(r["source"]).name: r for r in read_records(out)}
    assert recs["v2.mp4"]["status"] == "ok" and recs["missing.mp4"]["status"] == "failed"
    assert recs["missing.mp4"]["model"]["random_weights"] is True


def test_a_warning_about_the_model_settings_is_logged_once_per_run(
    tiny_model_dir: Path, videos: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """float16 asked for on the CPU is worth one warning: it was logged at every check, key
    and load of the run (five times for one clip), as a user's notebook showed."""
    from framepipe.generate import GenerationSettings, ModelConfig

    cfg = ModelConfig(model=str(tiny_model_dir), dtype="float16", device="cpu")
    with caplog.at_level("WARNING", logger="framepipe"):
        summary = caption(
            [videos / "v0.mp4"],
            None,
            model=cfg,
            settings=GenerationSettings(max_new_tokens=2),
            sample=SampleConfig(n=2),
            workers=0,
        )
    assert summary.done == 1
    assert caplog.text.count("float16 on CPU is slow and lossy") == 1


def test_the_random_weights_warning_is_said_once_per_loaded_model(
    videos: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A notebook running one Pipeline over and over was told at every run that the model
    it had already been told about has random weights."""
    pipe = Pipeline(generator=EchoGenerator(), sample=SampleConfig(n=2), workers=0)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="framepipe"):
        for _ in range(3):
            assert pipe.run([videos / "v0.mp4"], None).done == 1
        assert caplog.text.count("has random weights") == 1
        _run([videos / "v0.mp4"], EchoGenerator(), workers=0)  # another pipeline: said again
        assert caplog.text.count("has random weights") == 2


class _LoadedElsewhere:
    """What ``LlavaForConditionalGeneration.from_pretrained`` returns, as far as framepipe can
    tell: a model, not something that answers requests."""

    def generate(self, **kw: Any) -> None: ...


@pytest.mark.parametrize("where", ["model", "generator"])
def test_a_model_loaded_by_the_user_is_refused_saying_what_to_pass(where: str) -> None:
    """A transformers model passed as ``model=`` or ``generator=`` is a TypeError saying what
    each takes (was an AttributeError about ``trust_remote_code`` or ``describe``)."""
    with pytest.raises(TypeError, match=rf"^{where} must be a "):
        Pipeline(**{where: _LoadedElsewhere()})  # type: ignore[arg-type]


def test_settings_as_a_dict_and_torch_dtypes_are_taken_as_transformers_users_write_them() -> None:
    """``settings={"max_new_tokens": 4}`` failed with an AttributeError after the model
    loaded, and ``ModelConfig(dtype=torch.bfloat16)`` was refused: a dict of the settings'
    fields and a torch dtype or device are taken by name; a field it lacks is a ConfigError,
    anything else one TypeError."""
    import torch

    from framepipe.generate import GenerationSettings, ModelConfig

    pipe = Pipeline(
        ModelConfig("some/model", dtype=torch.bfloat16, device=torch.device("cpu")),
        settings={"max_new_tokens": 4, "batch_size": 2},
    )
    assert pipe.settings == GenerationSettings(max_new_tokens=4, batch_size=2)
    assert (pipe.model_config.dtype, pipe.model_config.device) == ("bfloat16", "cpu")
    with pytest.raises(ConfigError, match="has no field 'max_tokens'"):
        Pipeline(settings={"max_tokens": 4})  # as sample={"frames": 8} is
    with pytest.raises(TypeError, match=r"^settings must be a framepipe.generate.Generation"):
        Pipeline(settings=4)  # type: ignore[arg-type]


def test_a_model_folder_given_as_a_path_is_its_name_in_the_model_config(tmp_path: Path) -> None:
    """``ModelConfig(model=Path("models/tiny"))`` kept the Path: ``to_json()`` could not be
    written as JSON, and it differed from the same config given the name as a str."""
    from framepipe.generate import ModelConfig

    given = ModelConfig(model=tmp_path / "tiny")
    assert given == ModelConfig(model=str(tmp_path / "tiny"))
    assert json.loads(json.dumps(given.to_json()))["model"] == str(tmp_path / "tiny")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"torch_dtype": "bfloat16"}, "dtype="),
        ({"device_map": "auto"}, "device="),
        ({"attn_implementation": "sdpa"}, "attn="),
        ({"load_in_4bit": True}, "quantize='4bit'"),
        ({"pretrained_model_name_or_path": "some/model"}, "model="),
    ],
)
def test_a_transformers_spelling_of_a_model_option_names_framepipes(
    given: dict[str, Any], said: str
) -> None:
    """``ModelConfig(torch_dtype=...)`` was Python's bare "unexpected keyword argument":
    one line now says framepipe's own name for it (never taken in its place)."""
    from framepipe.generate import GenerationSettings, ModelConfig

    name = next(iter(given))
    with pytest.raises(TypeError, match=rf"^ModelConfig\(\) .* '{name}': framepipe's is {said}"):
        ModelConfig(**given)
    with pytest.raises(TypeError, match=r"'max_tokens': framepipe's is max_new_tokens="):
        GenerationSettings(max_tokens=8)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"ModelConfig.__init__\(\) got an unexpected .* 'dtpye'"):
        ModelConfig(dtpye="float32")  # type: ignore[call-arg]


def test_a_transformers_generation_config_is_taken_as_the_settings() -> None:
    """``settings=GenerationConfig(max_new_tokens=8)``, as transformers users write it, was
    refused ("not GenerationConfig"); a field framepipe would not apply is still refused."""
    from transformers import GenerationConfig

    from framepipe.generate import GenerationSettings

    given = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=0.5, top_k=5)
    pipe = Pipeline(settings=given)
    want = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.5, top_k=5)
    assert pipe.settings == want
    with pytest.raises(ConfigError, match=r"GenerationConfig\).*no field 'forced_eos_token_id'"):
        Pipeline(settings=GenerationConfig(max_new_tokens=8, forced_eos_token_id=3))


@pytest.mark.usefixtures("one_torch_thread")
def test_the_models_own_generation_config_is_taken_as_the_settings(
    tiny_model_dir: Path, videos: Path, tmp_path: Path
) -> None:
    """``GenerationConfig.from_pretrained(model_dir)`` (it sets the model's bos, eos and pad
    ids) was refused ("no field 'bos_token_id'"): its ids are the ones the model decodes
    with, so it is the default settings: the clips a run with those did are done (the same
    resume keys). A token id that is not the model's is refused before any work."""
    from transformers import GenerationConfig

    from framepipe.generate import GenerationSettings, ModelConfig

    own = GenerationConfig.from_pretrained(tiny_model_dir)
    assert own.eos_token_id is not None
    cfg = ModelConfig(str(tiny_model_dir), dtype="float32", device="cpu")
    opts: dict[str, Any] = dict(sample=SampleConfig(n=2), questions=["What?"], workers=0)
    out, one = tmp_path / "r.jsonl", [videos / "v0.mp4"]
    assert Pipeline(cfg, {"max_new_tokens": 4}, **opts).run(one, out).done == 1
    own.max_new_tokens = 4
    pipe = Pipeline(cfg, own, **opts)
    assert pipe.settings == GenerationSettings(max_new_tokens=4)
    again = pipe.run(one, out)
    assert (again.done, again.skipped) == (0, 1)
    other = GenerationConfig(max_new_tokens=4, eos_token_id=own.eos_token_id + 1)
    with pytest.raises(ConfigError, match=r"eos_token_id \d+ is not .*'s own \(\d+\)"):
        Pipeline(cfg, other, **opts).run(one, tmp_path / "other.jsonl")
    assert not (tmp_path / "other.jsonl").exists()


@pytest.mark.parametrize(
    ("name", "where"),
    [("dtype", "model=ModelConfig"), ("max_new_tokens", "settings=GenerationSettings"),
     ("clip_seconds", "sample=SampleConfig")],
)  # fmt: skip
def test_a_config_field_given_to_caption_says_which_config_takes_it(name: str, where: str) -> None:
    """``caption(paths, dtype="bfloat16")`` was a bare "unexpected keyword argument"."""
    with pytest.raises(TypeError, match=rf"'{name}' \(pass {where}\({name}=\.\.\.\)\)$"):
        caption(["x"], **{name: 1})  # type: ignore[arg-type]


def test_a_transformers_spelling_given_to_caption_or_as_settings_names_framepipes() -> None:
    """``caption(paths, torch_dtype=...)`` and ``settings=GenerationConfig(max_length=...)``
    said only "unexpected keyword" / "has no field", though ModelConfig names framepipe's."""
    from transformers import GenerationConfig

    with pytest.raises(TypeError, match=r"'torch_dtype' \(framepipe's is dtype= in model=Mo"):
        caption(["x"], torch_dtype="bfloat16")  # type: ignore[call-arg]
    for settings in ({"max_tokens": 5}, GenerationConfig(max_length=100)):
        with pytest.raises(ConfigError, match=r"framepipe's for 'max_(tokens|length)' is max_new_"):
            Pipeline(settings=settings)


def test_a_misspelt_keyword_of_caption_is_named_as_captions() -> None:
    with pytest.raises(
        TypeError, match=r"^caption\(\) got an unexpected keyword argument 'question'"
    ):
        caption([], None, question="What?")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample(["a.mp4"], "out", 4, frames=8), r"^sample\(\) got an unexpected keyword"),
        (lambda: sample(), r"^sample\(\) missing a required argument: 'paths'"),
        (lambda: sample(["a.mp4"], "out", 4, 5), r"^sample\(\) too many positional"),
        (lambda: Pipeline().run(["a.mp4"], sample=8), r"^Pipeline.run\(\) got an unexpected"),
    ],
)
def test_a_bad_call_of_an_eager_run_is_a_type_error_naming_the_function(
    call: Any, message: str
) -> None:
    """``sample`` and ``Pipeline.run`` (the lazy runs run to their end) said only "got an
    unexpected keyword argument 'frames'", naming no function, unlike every other call."""
    with pytest.raises(TypeError, match=message):
        call()


class _RefusingGenerator(EchoGenerator):
    """A generator whose model check refuses the run."""

    def describe(self) -> dict[str, Any]:
        raise ModelLoadError("test/refusing: refused by its check")


@pytest.mark.parametrize("why", ["no inputs", "model check refuses"])
def test_an_engine_opened_for_a_run_that_stops_before_its_first_clip_is_closed(
    videos: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """A run that found no inputs, or whose model check refused it, returned or raised with
    its engine still open: an engine with something to stop (a cluster connection, a pool)
    was left running."""
    from framepipe.engine import ENGINES
    from framepipe.engine.local import LocalEngine

    closed: list[int] = []

    class Counted(LocalEngine):
        def close(self) -> None:
            closed.append(1)
            super().close()

    monkeypatch.setitem(ENGINES._items, "counted", Counted.from_options)
    gen = EchoGenerator() if why == "no inputs" else _RefusingGenerator()
    pipe = Pipeline(generator=gen, sample=SampleConfig(n=2), workers=0, engine="counted")  # type: ignore[arg-type]
    paths = [] if why == "no inputs" else [videos / "v0.mp4"]
    if why == "no inputs":
        assert pipe.run(paths, None).done == 0
    else:
        with pytest.raises(ModelLoadError, match="refused by its check"):
            pipe.run(paths, None)
    assert closed, "the engine was left open"
