"""``caption`` end to end: records, resume, failures, errors before loading, the CLI, and an
interrupted run.

Two generators are used. ``EchoGenerator`` is a TEST DOUBLE (it lives only here): its answer
spells out the mean value of every frame it was given, so the tests can check that each
clip's answer was made from exactly that clip's frames, and it counts its batches. The
tests marked ``tiny`` run the real generator on the project's tiny random LLaVA model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import engine_plugins
import numpy as np
import pytest

from framepipe.caption import RANDOM_WEIGHTS_NOTE, CaptionSummary, Pipeline, caption
from framepipe.errors import ConfigError, GenerationError, OutputError
from framepipe.output import read_records
from framepipe.pipeline import SampleConfig
from framepipe.questions import default_question
from framepipe.sources import open_source

TESTS = Path(__file__).resolve().parent


# -- the test double ------------------------------------------------------------------------
@dataclass
class _EchoAnswer:
    prompt: str
    answers: list[str]
    generate_s: float
    prompt_tokens: int
    new_tokens: list[int]


def frames_signature(images: Sequence[np.ndarray]) -> str:
    return ",".join(str(round(float(np.asarray(im).mean()), 1)) for im in images)


class EchoGenerator:
    """TEST DOUBLE with the Generator's methods: answers describe the frames it was given."""

    def __init__(self, fail_signature: str | None = None) -> None:
        self.batches: list[int] = []
        self.fail_signature = fail_signature

    def describe(self) -> dict[str, Any]:
        return {
            "id": "test/echo",
            "revision": None,
            "path": None,
            "dtype": "float32",
            "device": "cpu",
            "quantize": None,
            "attn": "eager",
            "random_weights": True,
        }

    def answer(self, requests: Sequence[Any]) -> list[_EchoAnswer]:
        self.batches.append(len(requests))
        out = []
        for req in requests:
            sig = frames_signature(req.images)
            if sig == self.fail_signature:
                raise GenerationError("echo: this clip cannot be answered")
            qs = list(req.questions)
            out.append(
                _EchoAnswer(
                    prompt=f"{req.system or ''}|{len(req.images)} images|{qs[0]}",
                    answers=[f"{q} => {sig}" for q in qs],
                    generate_s=0.001,
                    prompt_tokens=7,
                    new_tokens=[1] * len(qs),
                )
            )
        return out


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
        from framepipe.pipeline import select

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


def test_a_hung_decoder_fails_its_clip_only(videos: Path, tmp_path: Path) -> None:
    hang = engine_plugins.make_video(tmp_path / "x_hang.mp4", 20, seed=9)
    s = _run(
        [videos / "v0.mp4", hang, videos / "v1.mp4"],
        EchoGenerator(),
        sample=SampleConfig(n=2, sampler="engine_plugins:misbehaving"),
        decode_timeout_s=1.0,
        workers=2,
    )
    by = {Path(r.source).name: r for r in s.records}
    assert by["v0.mp4"].status == by["v1.mp4"].status == "ok"
    assert by["x_hang.mp4"].status == "failed"
    assert "did not finish within 1 s" in (by["x_hang.mp4"].error or "")


# -- errors before any heavy work ---------------------------------------------------------------
class _NeverLoaded(EchoGenerator):
    def describe(self) -> dict[str, Any]:
        raise AssertionError("the model was used although the run should have stopped")


@pytest.mark.parametrize("questions", [[""], ["ok", "  "]])
def test_empty_question(questions: list[str]) -> None:
    with pytest.raises(ConfigError, match="empty"):
        Pipeline(generator=_NeverLoaded(), questions=questions)  # type: ignore[arg-type]


def test_unwritable_output(videos: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        _run([videos], _NeverLoaded(), output=a_file / "results.jsonl")
    with pytest.raises(OutputError, match="is a folder"):
        _run([videos], _NeverLoaded(), output=tmp_path)


def test_no_inputs_loads_nothing(tmp_path: Path) -> None:
    s = _run([], _NeverLoaded(), output=tmp_path / "r.jsonl")
    assert s.done == 0 and not s.records


def test_api_caption_without_output(videos: Path) -> None:
    pipe = Pipeline(generator=EchoGenerator(), sample=SampleConfig(n=2), workers=0)  # type: ignore[arg-type]
    s = pipe.run([videos / "v3.mp4"], None, overwrite=False)
    assert s.done == 1 and s.records[0].answers
    assert callable(caption)
