"""The generator's batch bookkeeping (framepipe/generate/batching.py and its use), on the
tiny random model: each prompt is tokenized once, the context guard is unchanged, and an
out-of-memory retry redoes only what is not answered yet (the model call is made to raise
``torch.OutOfMemoryError`` on the CPU), with a one-line error for a clip that does not fit
even alone."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from media import random_frames

from framepipe.config import SampleConfig
from framepipe.errors import GenerationError, PromptError, StopRunError
from framepipe.generate import GenerationSettings, Generator, ModelConfig, Request
from framepipe.prompt import Segment

QUESTIONS = [
    "What are these?",
    "Describe what happens in the video in detail.",
    "How many people are there? Answer in one word.",
    "Is it day or night?",
]
LONG = [
    "Describe every object you can see, where it is, what colour it has, and how it moves "
    "from the first frame to the last one, in as much detail as you can manage.",
    "List all the people, animals and vehicles in these frames, one per line, each with what "
    "it is doing, where it stands and whether it is still there at the end.",
]


frames = functools.partial(random_frames, size=(40, 56))
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gen(tiny_model_dir: Path) -> Generator:
    cfg = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    return Generator.load(cfg, GenerationSettings(max_new_tokens=6, batch_size=4))


def fresh(gen: Generator, batch_size: int) -> Generator:
    """A generator on the same loaded model with its own batch size and state."""
    s = GenerationSettings(max_new_tokens=gen.settings.max_new_tokens, batch_size=batch_size)
    return Generator(gen.model, gen.spec, gen.runtime, s)


def oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


# -- tokenization -----------------------------------------------------------------------------


class CountingTokenizer:
    """Wraps the real tokenizer and records the texts it is asked to tokenize."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.texts: list[str] = []

    def __call__(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.texts.append(text)
        return self.tok(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tok, name)


def test_each_distinct_prompt_is_tokenized_once(
    gen: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    reqs = [Request(frames(3, 100 + i), QUESTIONS[:2]) for i in range(3)]
    reqs.append(Request(frames(2, 103), QUESTIONS[:1]))
    expected = [a.answers for a in gen.answer(reqs)]
    g = fresh(gen, 4)
    counting = CountingTokenizer(gen.spec.tokenizer)
    monkeypatch.setattr(g.spec, "tokenizer", counting)
    first = g.answer(reqs)
    second = g.answer(reqs)
    assert [a.answers for a in first] == [a.answers for a in second] == expected
    image = gen.spec.image_token
    run = image * gen.spec.tokens_per_image
    expanded = [t for t in counting.texts if run in t]
    plain = [t for t in counting.texts if run not in t]
    # 3 distinct prompts per call; the expanded text only once, to check the id expansion
    assert len(expanded) == 1 and g._expand_ids_ok is True
    assert len(plain) == 6 and len(set(plain)) == 3
    assert sorted(set(plain)) == sorted(
        {gen.spec.build_prompt(3, q) for q in QUESTIONS[:2]}
        | {gen.spec.build_prompt(2, QUESTIONS[0])}
    )


@pytest.mark.parametrize(
    ("n", "question", "system", "segments"),
    [
        (1, QUESTIONS[0], None, None),
        (4, QUESTIONS[1], "Answer briefly.", None),
        (3, "Frame <1> or <2>: which one shows  the object?", None, None),
        (3, QUESTIONS[2], None, [Segment("Video 1:", 2), Segment("Reference image:\n", 1)]),
        (0, QUESTIONS[3], None, None),
    ],
)
def test_prompt_ids_equal_the_processor_way(
    gen: Generator, n: int, question: str, system: str | None, segments: list[Segment] | None
) -> None:
    """Ids built from the placeholders' ids are the ids of the expanded text (the way the
    processor tokenizes), and the text count is the context guard's own."""
    g = fresh(gen, 4)
    p = g._prompt(n, question, system, segments, {})
    spec = gen.spec
    text = spec.build_prompt(n, question, system, segments)
    assert p.text == text
    assert p.ids == list(spec.tokenizer(spec.expand(text), add_special_tokens=True)["input_ids"])
    assert p.text_tokens == spec.text_tokens(text)
    if n:  # the check ran and agreed; the answers of the text way are the same
        assert g._expand_ids_ok is True
        imgs = frames(n, 7)
        by_ids = g.answer([Request(imgs, [question], system, segments)])[0]
        g._expand_ids_ok = False  # force the text way
        by_text = g.answer([Request(imgs, [question], system, segments)])[0]
        assert by_ids.answers == by_text.answers
        assert by_ids.prompt_tokens == by_text.prompt_tokens == len(p.ids)


def test_context_guard_messages_unchanged(gen: Generator) -> None:
    spec = gen.spec
    qs = [QUESTIONS[0], LONG[0]]
    fit = spec.max_images(qs, "Be brief.", max_new_tokens=gen.settings.max_new_tokens)
    small = [np.zeros((4, 4, 3), np.uint8)]
    for n in (fit + 1, fit + 7):
        with pytest.raises(PromptError) as ref:
            spec.check_fits(n, qs, "Be brief.", max_new_tokens=gen.settings.max_new_tokens)
        big = Request(small * n, qs, "Be brief.")
        with pytest.raises(PromptError) as got:
            gen.answer([Request(frames(1, 0), QUESTIONS[:1]), big])
        assert str(got.value) == str(ref.value)
        assert f"at most {fit} frames fit" in str(got.value)
        # answer_each: the refused clip gets the same error, the other one its answer
        each = fresh(gen, 4).answer_each([Request(frames(1, 0), QUESTIONS[:1]), big])
        assert isinstance(each[1], PromptError) and str(each[1]) == str(ref.value)
        assert not isinstance(each[0], Exception)
        assert each[0].answers == gen.answer([Request(frames(1, 0), QUESTIONS[:1])])[0].answers
    spec.check_fits(fit, qs, "Be brief.", max_new_tokens=gen.settings.max_new_tokens)


# -- out of memory ----------------------------------------------------------------------------


def patch_call(
    monkeypatch: pytest.MonkeyPatch, obj: Any, name: str, fails: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Wrap ``obj.name`` (keeping its signature, which transformers inspects) so that it raises
    a CUDA out-of-memory error where ``fails(kwargs)``; returns the log of the calls that ran."""
    real = getattr(obj, name)
    done: list[dict[str, Any]] = []

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if fails(kwargs):
            raise oom()
        out = real(*args, **kwargs)
        done.append(kwargs)
        return out

    monkeypatch.setattr(obj, name, wrapper)
    return done


def rows_of(kwargs: dict[str, Any]) -> int:
    ids = kwargs.get("input_ids")
    if ids is None:
        ids = kwargs["inputs_embeds"]
    return int(ids.shape[0])


@pytest.mark.parametrize("k", [1, 2])
def test_oom_halves_to_what_fits_and_answers_stay_the_same(
    gen: Generator, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    reqs = [
        Request(frames(2, 10), QUESTIONS[:3]),
        Request(frames(3, 11), [QUESTIONS[1]]),
        Request(frames(3, 12), QUESTIONS[2:]),
        Request(frames(2, 13), [QUESTIONS[0]], system="Answer briefly."),
        Request(frames(1, 14), QUESTIONS),
        Request(frames(2, 15), ["Is it day or night? Be brief."]),
    ]
    expected = fresh(gen, 8).answer(reqs)
    g = fresh(gen, 8)
    # any forward pass (prefill or a decoding step) with more than k sequences runs out
    patch_call(monkeypatch, gen.model, "forward", lambda kw: rows_of(kw) > k)
    generated = patch_call(monkeypatch, gen.model, "generate", lambda kw: False)
    got = g.answer(reqs)
    assert [a.answers for a in got] == [a.answers for a in expected]
    assert [a.new_tokens for a in got] == [a.new_tokens for a in expected]
    assert g.batch_size == k
    # every question was generated once, to the end (no answered row generated again)
    rows = [tuple(r.tolist()) for kw in generated for r in kw["input_ids"]]
    assert len(rows) == sum(len(r.questions) for r in reqs) == len(set(rows))


def test_oom_retry_keeps_the_answers_already_given(
    gen: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One clip with more questions than the batch: its rows go in chunks after one prefill;
    running out of memory on the second chunk redoes only the second chunk's questions."""
    qs = [*QUESTIONS, *LONG]
    req = Request(frames(2, 20), qs)
    expected = fresh(gen, 4).answer([req])[0]
    g = fresh(gen, 4)
    calls = {"n": 0}

    def second_call_fails(kw: dict[str, Any]) -> bool:
        calls["n"] += 1
        return calls["n"] == 2

    generated = patch_call(monkeypatch, gen.model, "generate", second_call_fails)
    got = g.answer([req])[0]
    assert got.answers == expected.answers and got.new_tokens == expected.new_tokens
    assert g.batch_size == 2
    sizes = [rows_of(kw) for kw in generated]
    assert sizes == [4, 2]  # the 4 answered rows were not generated again
    rows = [tuple(r.tolist()) for kw in generated for r in kw["input_ids"]]
    assert len(set(rows)) == len(qs)


def cached_tokens(kw: dict[str, Any]) -> int:
    """Tokens a forward pass attends to: those in its cache already and its own."""
    cache = kw.get("cache", kw.get("past_key_values"))
    past = 0 if cache is None else int(cache.get_seq_length())
    return past + int(kw["input_ids"].shape[1])


def test_one_sequence_out_of_memory_encodes_fewer_images_at_once(
    gen: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Halving counts images too: a clip whose images do not fit the vision tower at once
    is prefilled in pieces of fewer images, with the same answers."""
    reqs = [Request(frames(6, 31), QUESTIONS[:2]), Request(frames(2, 32), [QUESTIONS[2]])]
    expected = [a.answers for a in fresh(gen, 4).answer(reqs)]

    def too_many_frames(kw: dict[str, Any]) -> bool:
        pv = kw.get("pixel_values")
        return pv is not None and int(pv.shape[0]) > 2

    ran = patch_call(monkeypatch, gen.model, "forward", too_many_frames)
    g = fresh(gen, 4)
    assert [a.answers for a in g.answer(reqs)] == expected
    assert g.batch_size == 1 and g.image_batch == 1  # 6 -> 3 -> 1 image at a time
    encoded = [int(kw["pixel_values"].shape[0]) for kw in ran if kw.get("pixel_values") is not None]
    assert max(encoded) <= 2 and sum(encoded) >= 8  # every image encoded, in pieces


def test_a_clip_that_does_not_fit_alone_fails_with_one_line(
    gen: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    reqs = [
        Request(frames(2, 30), QUESTIONS[:2]),
        Request(frames(6, 31), [QUESTIONS[0]]),  # too many frames for the memory
        Request(frames(2, 32), [QUESTIONS[2]]),
        Request(frames(1, 33), [QUESTIONS[3]]),
    ]
    expected = [a.answers for a in fresh(gen, 4).answer([reqs[0], reqs[2], reqs[3]])]
    limit = len(fresh(gen, 4)._prompt(2, QUESTIONS[2], None, None, {}).ids) + 20

    def too_many_tokens(kw: dict[str, Any]) -> bool:  # the 6 frames never fit, in any piece
        return cached_tokens(kw) > limit

    ran = patch_call(monkeypatch, gen.model, "forward", too_many_tokens)
    g = fresh(gen, 4)
    out = g.answer_each(reqs)
    assert len(out) == 4 and isinstance(out[1], GenerationError)
    msg = str(out[1])
    assert "\n" not in msg
    assert msg.startswith("out of memory on cpu with batch size 1 (")
    assert f"({len(g._prompt(6, QUESTIONS[0], None, None, {}).ids)} prompt tokens)" in msg
    answers = [a for i, a in enumerate(out) if i != 1]
    assert all(not isinstance(a, Exception) for a in answers)
    assert [a.answers for a in answers if not isinstance(a, Exception)] == expected
    assert len(ran) < 200  # it ended: a bounded number of model calls

    # the strict API raises the same one-line error (the batch size is 1 by now)
    with pytest.raises(GenerationError, match=r"^out of memory on cpu with batch size 1 \("):
        g.answer(reqs)
    # and a generator whose every call runs out of memory fails every clip, once each
    patch_call(monkeypatch, gen.model, "forward", lambda kw: True)
    out = fresh(gen, 8).answer_each(reqs)
    assert all(isinstance(a, GenerationError) for a in out)


def test_other_errors_still_fail_the_batch(gen: Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("expected all tensors\nto match")

    monkeypatch.setattr(gen.model, "generate", boom)
    with pytest.raises(GenerationError, match=r"batch of 2 clip\(s\): RuntimeError: expected all"):
        fresh(gen, 4).answer_each([Request(frames(1, 40), ["a?"]), Request(frames(1, 41), ["b?"])])


@pytest.mark.parametrize(
    "text",
    [
        "CUDA error: an illegal memory access was encountered",
        "CUDA error: device-side assert triggered",
        "CUBLAS_STATUS_EXECUTION_FAILED when calling cublasGemmEx",
    ],
)
def test_a_sticky_cuda_error_stops_the_run(
    gen: Generator, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """A CUDA error that leaves the GPU unusable is not one clip's failure: every later clip
    would fail the same way, so the run stops with one line."""
    calls = []

    def boom(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise RuntimeError(text + "\nCompile with TORCH_USE_CUDA_DSA for device-side assertions.")

    monkeypatch.setattr(gen.model, "generate", boom)
    reqs = [Request(frames(1, 40), ["a?"]), Request(frames(1, 41), ["b?"])]
    with pytest.raises(StopRunError) as err:
        fresh(gen, 4).answer_each(reqs)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cpu: " + text.split(" when")[0])
    assert "run the same command again to resume" in msg
    assert calls == [1]  # not retried clip by clip


def test_a_lone_sequence_is_not_retried_at_smaller_batch_sizes(
    gen: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One clip with one question (and one frame) runs alone whatever the batch size:
    halving the batch size would only repeat the same call, so it fails at once and the
    batch size stays."""
    attempts: list[int] = []

    def always(kw: dict[str, Any]) -> bool:
        attempts.append(rows_of(kw))
        return True

    patch_call(monkeypatch, gen.model, "forward", always)
    g = fresh(gen, 8)
    out = g.answer_each([Request(frames(1, 50), [QUESTIONS[0]])])
    assert isinstance(out[0], GenerationError) and "batch size 1" in str(out[0])
    assert attempts == [1] and g.batch_size == 8

    # two rows at batch size 8: one failed try, then straight to a batch size below 2
    failed: list[int] = []

    def two_rows(kw: dict[str, Any]) -> bool:
        if rows_of(kw) > 1:
            failed.append(rows_of(kw))
            return True
        return False

    monkeypatch.undo()
    patch_call(monkeypatch, gen.model, "forward", two_rows)
    g = fresh(gen, 8)
    req = Request(frames(2, 51), QUESTIONS[:2])
    assert g.answer([req])[0].answers == fresh(gen, 1).answer([req])[0].answers
    assert failed == [2] and g.batch_size == 1


# -- in the caption pipeline --------------------------------------------------------------------


def test_caption_fails_only_the_clip_that_does_not_fit(
    gen: Generator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The pipeline takes the generator's per-clip errors: the clip that runs out of memory
    alone (even one image at a time) is a failed record, the others are answered once (not
    again clip by clip)."""
    import engine_plugins

    from framepipe.config import SampleConfig
    from framepipe.runs.caption import Pipeline
    from framepipe.sources import open_source

    for k in range(3):
        engine_plugins.make_video(tmp_path / f"v{k}.mp4", 12 + 4 * k, seed=k)
    paths = sorted(tmp_path.glob("*.mp4"))

    def run() -> dict[str, Any]:
        pipe = Pipeline(
            generator=fresh(gen, 4),
            sample=SampleConfig(n=2),
            questions=QUESTIONS[:2],
            workers=0,
        )
        return {Path(r.source).name: r for r in pipe.run(paths, None).records}

    expected = run()
    target = expected["v1.mp4"]
    with open_source(target.source) as src:
        images = src.read(target.indices).images()
    poison = gen.spec.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def holds_target(kw: dict[str, Any]) -> bool:
        pv = kw.get("pixel_values")
        if pv is None:
            return False
        return any(torch.equal(pv[j], poison[0]) for j in range(int(pv.shape[0])))

    patch_call(monkeypatch, gen.model, "forward", holds_target)
    generated = patch_call(monkeypatch, gen.model, "generate", lambda kw: False)
    got = run()
    failed = got.pop("v1.mp4")
    assert failed.status == "failed" and "out of memory" in (failed.error or "")
    assert "v1.mp4" in (failed.error or "") and "\n" not in (failed.error or "")
    assert {k: r.answers for k, r in got.items()} == {
        k: r.answers for k, r in expected.items() if k != "v1.mp4"
    }
    rows = [tuple(r.tolist()) for kw in generated for r in kw["input_ids"]]
    assert len(rows) == 2 * len(got)  # each other clip's two questions generated once


def test_caption_stops_at_a_sticky_cuda_error_and_a_rerun_resumes(
    gen: Generator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CUDA error that leaves the GPU unusable stops the run with one line; the records
    already written stay, and the same run again answers only the rest."""
    import engine_plugins

    from framepipe.output import read_records
    from framepipe.runs.caption import caption

    for k in range(4):
        engine_plugins.make_video(tmp_path / "in" / f"v{k}.mp4", 12, seed=k)
    out = tmp_path / "out.jsonl"
    kw: dict[str, Any] = {"sample": SampleConfig(n=2), "questions": QUESTIONS[:1], "workers": 0}
    calls = {"n": 0}
    real = gen.model.generate

    @functools.wraps(real)
    def second_batch_crashes(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen.model, "generate", second_batch_crashes)
    with pytest.raises(StopRunError, match=r"^cpu: CUDA error: an illegal memory access"):
        caption([tmp_path / "in"], out, generator=fresh(gen, 2), **kw)
    written = list(read_records(out))
    assert len(written) == 2 and all(r["status"] == "ok" for r in written)  # the first batch
    monkeypatch.undo()
    again = caption([tmp_path / "in"], out, generator=fresh(gen, 2), **kw)
    assert (again.done, again.skipped, len(again.failed)) == (2, 2, 0)
    recs = list(read_records(out))
    assert len({r["key"] for r in recs}) == len(recs) == 4


def test_pixel_values_are_made_in_the_decoding_processes(
    gen: Generator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The image processor runs where the clips are decoded: the generation process gets
    pixel values and never preprocesses (it would fail here), with the same answers."""
    import engine_plugins

    from framepipe.generate.config import Prepared
    from framepipe.generate.spec import PixelValues
    from framepipe.runs.caption import caption

    for k in range(2):
        engine_plugins.make_video(tmp_path / f"v{k}.mp4", 12, seed=k)
    kw: dict[str, Any] = {"sample": SampleConfig(n=2), "questions": QUESTIONS[:1]}
    expected = caption([tmp_path], None, generator=fresh(gen, 4), workers=0, **kw)
    seen: list[type] = []

    class Spy(Generator):
        def _units(self, index: int, r: Request, *args: Any) -> Any:
            seen.append(type(r.images))
            return super()._units(index, r, *args)

    def boom(self: PixelValues, images: Any) -> Any:
        raise AssertionError("preprocessed in the generation process")

    monkeypatch.setattr(PixelValues, "__call__", boom)
    spy = Spy(gen.model, gen.spec, gen.runtime, GenerationSettings(6, batch_size=4))
    got = caption([tmp_path], None, generator=spy, workers=1, **kw)
    assert got.ok and seen == [Prepared, Prepared]
    assert [r.answers for r in got.records] == [r.answers for r in expected.records]


def test_the_cpu_allocators_failure_counts_as_out_of_memory() -> None:
    from framepipe.generate.batching import is_oom as _is_oom

    try:
        torch.empty(10**14)  # 400 TB: refused by the allocator at once
    except RuntimeError as exc:
        assert _is_oom(exc)
    else:  # pragma: no cover
        pytest.skip("this machine allocated 400 TB")
    assert _is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert not _is_oom(RuntimeError("shape mismatch"))


@pytest.mark.parametrize("where", ["question", "system", "segment"])
def test_text_holding_the_image_placeholder_is_refused_in_one_line(where: str) -> None:
    from framepipe.prompt import render_prompt

    text = "What is in <image> 2?"
    q = text if where == "question" else "What is it?"
    system = text if where == "system" else None
    segs = [Segment(text if where == "segment" else "Video 1:", 2)]
    with pytest.raises(PromptError) as err:
        render_prompt(None, 2, q, system, segs)
    msg = str(err.value)
    assert "\n" not in msg and "<image>" in msg and "image placeholder" in msg
    render_prompt(None, 2, "What is in image 2?", None, [Segment("Video 1:", 2)])  # fine
