"""The generator on the tiny random model: batching, multi-question reuse and the plain
transformers path give the same greedy answers; loading errors are one line and fast;
device, dtype, attention and quantization choices are checked before any weight is read."""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from media import random_frames

from framepipe.errors import ConfigError, GenerationError, ModelLoadError, PromptError
from framepipe.generate import (
    Answer,
    GenerationSettings,
    Generator,
    ModelConfig,
    ModelSpec,
    Request,
    hub,
    resolve_runtime,
)
from framepipe.generate import device as device_mod
from framepipe.prompt import Segment

QUESTIONS = [
    "What are these?",
    "Describe what happens in the video in detail.",
    "How many people are there? Answer in one word.",
]


frames = functools.partial(random_frames, size=(48, 64))
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gen(tiny_model_dir: Path) -> Generator:
    cfg = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    return Generator.load(cfg, GenerationSettings(max_new_tokens=8, batch_size=4))


def plain_hf(gen: Generator, images: list[np.ndarray], question: str, **kw: object) -> str:
    """The model card's way: processor, then generate, one clip at a time."""
    prompt = gen.spec.build_prompt(len(images), question, **kw)  # type: ignore[arg-type]
    inputs = gen.spec.processor(text=[prompt], images=images, return_tensors="pt")
    with torch.inference_mode():
        out = gen.model.generate(
            **inputs, max_new_tokens=gen.settings.max_new_tokens, do_sample=False
        )
    new = out[0, inputs["input_ids"].shape[1] :]
    return str(gen.spec.tokenizer.decode(new, skip_special_tokens=True)).strip()


def test_describe_says_random_weights(gen: Generator, tiny_model_dir: Path) -> None:
    d = gen.describe()
    assert d["random_weights"] is True
    assert d["path"] == str(tiny_model_dir.resolve())
    assert d["dtype"] == "float32" and d["device"] == "cpu" and d["attn"] == "sdpa"
    assert d["quantize"] is None
    json.dumps(d)


def test_answers_equal_the_plain_transformers_path(gen: Generator) -> None:
    imgs = frames(3, 0)
    got = gen.answer([Request(imgs, [QUESTIONS[1]])])[0]
    assert got.answers == [plain_hf(gen, imgs, QUESTIONS[1])]
    assert got.prompt == gen.spec.build_prompt(3, QUESTIONS[1])
    assert got.prompt_tokens == gen.spec.prompt_tokens(got.prompt)
    assert 0 < got.new_tokens[0] <= 8 and got.generate_s > 0


def test_multi_question_reuse_equals_separate_runs(gen: Generator) -> None:
    imgs = frames(4, 1)
    together = gen.answer([Request(imgs, QUESTIONS)])[0]
    separate = [gen.answer([Request(imgs, [q])])[0].answers[0] for q in QUESTIONS]
    assert together.answers == separate
    assert together.answers == [plain_hf(gen, imgs, q) for q in QUESTIONS]
    assert together.prompts == [gen.spec.build_prompt(4, q) for q in QUESTIONS]
    assert len(set(together.answers)) > 1  # the questions really differ in what they produce


def test_batched_answers_equal_unbatched(gen: Generator) -> None:
    reqs = [
        Request(frames(2, 10), [QUESTIONS[0]]),
        Request(frames(5, 11), [QUESTIONS[2]]),  # different prompt length: left padding
        Request(frames(1, 12), QUESTIONS[:2]),
        Request(frames(3, 13), QUESTIONS),  # 3 questions: a batch of its own (4 rows max)
        Request(frames(2, 14), [QUESTIONS[1]], system="Answer briefly."),
    ]
    batched = gen.answer(reqs)
    single = [gen.answer([r])[0] for r in reqs]
    padded = Generator(gen.model, gen.spec, gen.runtime, gen.settings)
    padded.batched_prefill = not gen.batched_prefill  # the other prefill strategy
    assert [a.answers for a in padded.answer(reqs)] == [a.answers for a in single]
    assert [a.answers for a in batched] == [a.answers for a in single]
    assert [a.new_tokens for a in batched] == [a.new_tokens for a in single]
    assert [a.prompt_tokens for a in batched] == [a.prompt_tokens for a in single]


def test_a_request_with_more_questions_than_the_batch(gen: Generator, tiny_model_dir: Path) -> None:
    small = Generator(gen.model, gen.spec, gen.runtime, GenerationSettings(8, batch_size=2))
    imgs = frames(2, 20)
    qs = [*QUESTIONS, "Is it day or night?"]
    assert (
        small.answer([Request(imgs, qs)])[0].answers == gen.answer([Request(imgs, qs)])[0].answers
    )


def test_interleaved_segments_answer_like_the_plain_path(gen: Generator) -> None:
    imgs = frames(3, 30)
    segs = [Segment("Video 1:", 2), Segment("Reference image:", 1)]
    q = "Which frame shows the reference object?"
    got = gen.answer([Request(imgs, [q], segments=segs)])[0]
    assert got.prompt.count("<image>") == 3 and "Video 1: <image><image>\n" in got.prompt
    assert got.answers == [plain_hf(gen, imgs, q, segments=segs)]


def test_sampling_is_seeded(gen: Generator) -> None:
    s = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)
    g = Generator(gen.model, gen.spec, gen.runtime, s)
    r = Request(frames(2, 40), QUESTIONS[:2])
    a, b = g.answer([r])[0].answers, g.answer([r])[0].answers
    assert a == b
    assert s.to_json()["seed"] == 7 and "seed" not in GenerationSettings().to_json()


SAMPLED = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)


def with_settings(gen: Generator, settings: GenerationSettings, fast: bool = True) -> Generator:
    g = Generator(gen.model, gen.spec, gen.runtime, settings)
    g.fast = fast
    return g


@pytest.mark.parametrize("fast", [True, False], ids=["shared-prefix", "plain-generate"])
def test_sampled_answers_of_a_clip_do_not_depend_on_its_batch(gen: Generator, fast: bool) -> None:
    """Seeded sampling draws each answer from its own stream (seed, clip, question): a clip
    draws the same whatever the batch size, whichever clips share its batch, and in a
    resumed run that answers only the clips not done yet. A request without a key is
    identified by its content."""
    reqs = [
        Request(frames(1 + i % 3, 80 + i), QUESTIONS[: 1 + i % 2], key=f"clip-{i}" if i else None)
        for i in range(5)
    ]
    got = {}
    for size in (1, 3):
        g = with_settings(gen, dataclasses.replace(SAMPLED, batch_size=size), fast)
        got[size] = [a.answers for a in g.answer(reqs)]
    assert got[1] == got[3]
    g = with_settings(gen, SAMPLED, fast)
    resumed = [a.answers for a in g.answer(reqs[3:])]  # clips 0-2 done, then a resume
    assert [a.answers for a in g.answer(reqs[::-1])][::-1] == got[1]
    assert resumed == got[1][3:]
    greedy = [a.answers for a in with_settings(gen, gen.settings, fast).answer(reqs)]
    assert greedy == [
        a.answers for a in gen.answer([dataclasses.replace(r, key=None) for r in reqs])
    ]
    assert greedy != got[1]


def test_seeds_clips_and_questions_each_draw_their_own_answers(gen: Generator) -> None:
    r = Request(frames(2, 90), [QUESTIONS[0], QUESTIONS[0]], key="a")
    by_seed = [
        with_settings(gen, dataclasses.replace(SAMPLED, seed=seed)).answer([r])[0].answers
        for seed in range(3)
    ]
    assert len({tuple(a) for a in by_seed}) == 3  # a vocabulary of hundreds of tokens
    assert by_seed[0][0] != by_seed[0][1]  # the same question twice: two draws
    a, b = with_settings(gen, SAMPLED).answer([r, dataclasses.replace(r, key="b")])
    assert a.answers != b.answers  # two clips with the same frames: their own draws


def test_beam_search_with_seeded_sampling_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--num-beams \(2\) with --do-sample"):
        GenerationSettings(do_sample=True, num_beams=2)
    GenerationSettings(do_sample=True, num_beams=2, seed=None)  # unseeded: transformers'
    GenerationSettings(num_beams=2)


def test_settings_of_the_wrong_type_are_a_config_error_and_numpy_numbers_plain_ones() -> None:
    """``GenerationSettings(max_new_tokens="8")`` (a dict read from a JSON or YAML file)
    failed with ``'<' not supported between 'str' and 'int'``, and a numpy int stayed one
    (the resume key's JSON cannot hold it): a value of the wrong type is a ConfigError
    naming the setting, a numpy number becomes the plain one."""
    import numpy as np

    for bad, message in (
        ({"max_new_tokens": "8"}, r"--max-new-tokens \('8'\) must be an integer"),
        ({"batch_size": 2.5}, r"--batch-size \(2.5\) must be an integer"),
        ({"do_sample": "yes"}, r"--do-sample \('yes'\) must be true or false"),
        ({"temperature": "hot"}, r"--temperature \('hot'\) must be a number"),
        ({"seed": True}, r"--seed \(True\) must be an integer"),
    ):
        with pytest.raises(ConfigError, match=message):
            GenerationSettings(**bad)
    s = GenerationSettings(
        max_new_tokens=np.int64(8), do_sample=np.bool_(True), top_p=np.float32(0.5)
    )
    assert (type(s.max_new_tokens), type(s.do_sample), type(s.top_p)) == (int, bool, float)
    assert json.dumps(s.to_json())  # plain types: the record and the key hold them
    assert GenerationSettings(seed=None).seed is None


def test_a_whole_number_for_a_float_setting_gives_the_same_resume_key() -> None:
    """``repetition_penalty=1`` (a dict, a JSON config, a Python call) is the ``1.0`` the
    command line and the defaults give: the records and resume keys held ``1`` and ``1.0``
    apart, so a re-run from Python of a command-line run's output redid every clip and
    wrote each a second record."""
    from framepipe.utils import stable_digest

    given = GenerationSettings(repetition_penalty=1, temperature=2, top_p=1, do_sample=True)
    cli = GenerationSettings(repetition_penalty=1.0, temperature=2.0, top_p=1.0, do_sample=True)
    assert json.dumps(given.to_json()) == json.dumps(cli.to_json())
    assert stable_digest(given.to_json()) == stable_digest(cli.to_json())
    assert type(dataclasses.replace(cli, temperature=3).temperature) is float


def test_an_answer_cut_at_max_new_tokens_is_marked_truncated(gen: Generator) -> None:
    r = Request(frames(2, 95), QUESTIONS[:2])
    seen: list[list[int]] = []
    g = with_settings(gen, dataclasses.replace(gen.settings, max_new_tokens=3))
    decode = g._decode
    g._decode = lambda tokens: (seen.append(tokens), decode(tokens))[1]  # type: ignore[method-assign]
    cut = g.answer([r])[0]
    assert cut.truncated == [True, True] and cut.new_tokens == [3, 3]
    # the same model, its second token of the first answer made an end-of-turn token: the
    # first answer ends before the limit
    end = seen[0][1]
    g = with_settings(gen, dataclasses.replace(gen.settings, max_new_tokens=3))
    g.eos_ids = [*g.eos_ids, end]
    ended = g.answer([r])[0]
    assert ended.truncated == [False, end not in seen[1]] and ended.new_tokens[0] == 1
    assert gen.answer([r])[0].truncated == [True, True]  # the 8 tokens of the fixture


def test_too_many_frames_refused_before_generation(gen: Generator) -> None:
    n = gen.spec.max_images(QUESTIONS[0], max_new_tokens=8) + 1
    imgs = [np.zeros((8, 8, 3), np.uint8)] * n
    with pytest.raises(PromptError, match=f"at most {n - 1} frames fit"):
        gen.answer([Request(imgs, [QUESTIONS[0]])])


def test_bad_requests() -> None:
    with pytest.raises(PromptError):
        Request(frames(1, 0), [""])
    with pytest.raises(PromptError, match="uint8"):
        Request([np.zeros((4, 4), np.float32)], ["q"])  # type: ignore[list-item]
    with pytest.raises(PromptError, match="segments hold 1 images"):
        Request(frames(2, 0), ["q"], segments=[Segment("Video 1:", 1)])


def test_cuda_oom_halves_the_batch(gen: Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    g = Generator(gen.model, gen.spec, gen.runtime, GenerationSettings(8, batch_size=4))
    reqs = [Request(frames(2, 50 + i), [QUESTIONS[i % 3]]) for i in range(4)]
    expected = [gen.answer([r])[0].answers for r in reqs]
    real = Generator._run_group
    sizes: list[int] = []

    def fake(self: Generator, group: list, *args: object) -> None:  # type: ignore[type-arg]
        rows = sum(len(u.questions) for u in group)
        sizes.append(rows)
        if rows > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        real(self, group, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Generator, "_run_group", fake)
    assert [a.answers for a in g.answer(reqs)] == expected
    assert g.batch_size == 1 and sizes[:3] == [4, 2, 1]

    def always(self: Generator, group: list, *args: object) -> None:  # type: ignore[type-arg]
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Generator, "_run_group", always)
    with pytest.raises(GenerationError, match=r"out of memory .* batch size 1"):
        g.answer(reqs[:1])


def test_float32_answers_do_not_depend_on_the_batch_and_each_knows_its_batch(
    gen: Generator,
) -> None:
    """In float32 a clip's answers are the same whatever the batch size and whichever clips
    share its batch (in bfloat16 they may not be: the README says so); each answer says the
    batch size it was decoded with (logged, not recorded: it depends on the schedule)."""
    reqs = [Request(frames(1 + i % 3, 60 + i), [QUESTIONS[i % 3]]) for i in range(6)]
    answers = {}
    for size in (1, 2, 4, 8):
        g = Generator(gen.model, gen.spec, gen.runtime, GenerationSettings(8, batch_size=size))
        got = g.answer(reqs)
        answers[size] = [a.answers for a in got]
        assert [a.batch_size for a in got] == [min(size, 6 - size * (i // size)) for i in range(6)]
    assert answers[1] == answers[2] == answers[4] == answers[8]
    shuffled = gen.answer(reqs[::-1])  # other batch companions
    assert [a.answers for a in shuffled][::-1] == answers[4]


def test_the_plain_generate_fallback_gives_the_same_answers(
    gen: Generator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the shared-prefix path is not known to work (a transformers release it was not
    tested on, or one whose API changed under it), plain ``model.generate`` answers the
    same."""
    import transformers

    from framepipe.generate import batching

    reqs = [
        Request(frames(2, 70), QUESTIONS),
        Request(frames(3, 71), [QUESTIONS[1]], system="Answer briefly."),
        Request(frames(1, 72), QUESTIONS[:2], segments=None),
    ]
    expected = [a.answers for a in gen.answer(reqs)]
    monkeypatch.setattr(transformers, "__version__", "6.0.0")
    assert not batching.fast_path_supported()
    plain = Generator(gen.model, gen.spec, gen.runtime, gen.settings)
    assert plain.fast is False
    assert [a.answers for a in plain.answer(reqs)] == expected
    monkeypatch.undo()
    # an API that changed under the shared-prefix path: found at the first batch, then plain
    g = Generator(gen.model, gen.spec, gen.runtime, gen.settings)
    assert g.fast is True
    monkeypatch.setattr(
        "framepipe.generate.generator.cache_argument", lambda model: "renamed_cache"
    )
    assert [a.answers for a in g.answer(reqs)] == expected
    assert g.fast is False and "answering with model.generate from now on" in caplog.text


# -- loading --------------------------------------------------------------------------------


def test_weights_load_straight_onto_the_device(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import LlavaForConditionalGeneration

    real = LlavaForConditionalGeneration.from_pretrained
    seen: dict[str, object] = {}

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        loaded = real(*args, **kwargs)  # type: ignore[arg-type]
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (output_loading_info)

        def moved(*a: object, **k: object) -> None:
            raise AssertionError("the model was moved after loading")

        model.to = moved  # type: ignore[method-assign]
        return loaded

    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", spy)
    cfg = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    g = Generator.load(cfg)
    assert seen["device_map"] == {"": torch.device("cpu")}
    assert all(p.device.type == "cpu" for p in g.model.parameters())


def test_load_kwargs_never_trust_remote_code_unless_asked(tiny_model_dir: Path) -> None:
    spec = ModelSpec.inspect(ModelConfig(model=str(tiny_model_dir)))
    assert spec.load_kwargs["trust_remote_code"] is False
    spec = ModelSpec.inspect(ModelConfig(model=str(tiny_model_dir), trust_remote_code=True))
    assert spec.load_kwargs["trust_remote_code"] is True


def test_a_pipeline_that_loaded_its_model_pickles_and_its_copy_loads_its_own(
    tiny_model_dir: Path,
) -> None:
    """A Pipeline pickled after a run (for a process pool, or Ray) failed with "Can't pickle
    local object 'install_output_capuring_hook...'": its backend sent the loaded torch model.
    """
    from framepipe.runs.caption import Pipeline

    cfg = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    pipe = Pipeline(cfg, {"max_new_tokens": 4}, questions="What?")
    pipe.check()
    request = Request(frames(2, 0), ["What?"])
    (answered,) = pipe.load().answer_each([request])
    copy = pickle.loads(pickle.dumps(pipe))
    assert copy.backend.generator is None and pipe.backend.generator is not None
    assert copy.model_key() == pipe.model_key()
    (again,) = copy.load().answer_each([request])
    assert isinstance(again, Answer) and isinstance(answered, Answer)
    assert again.answers == answered.answers


def test_load_refuses_a_spec_inspected_for_another_config(tiny_model_dir: Path) -> None:
    spec = ModelSpec.inspect(ModelConfig(model=str(tiny_model_dir), device="cpu"))
    other = ModelConfig(model=str(tiny_model_dir), device="cpu", attn="eager")
    with pytest.raises(ValueError, match="spec was inspected for"):
        Generator.load(other, spec=spec)
    assert Generator.load(spec.cfg, spec=spec).cfg is spec.cfg


def test_a_checkpoint_missing_tensors_is_refused_not_filled_with_random_weights(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A local checkpoint lacking some tensors loaded silently (transformers filled them
    with random values and only logged it) and answered: it is refused, naming a few of the
    missing tensors and their count. The tiny model, labelled random, still loads (a
    warning) and keeps its label."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    gone = sorted(k for k in tensors if ".layers.0." in k and "language_model" in k)
    assert len(gone) > 3
    save_file({k: v for k, v in tensors.items() if k not in gone}, broken / "model.safetensors")
    random_cfg = (broken / "config.json").read_text()
    cfg = json.loads(random_cfg)
    del cfg["framepipe_random_weights"]  # as a real model's config
    (broken / "config.json").write_text(json.dumps(cfg))
    load = functools.partial(Generator.load, settings=GenerationSettings(max_new_tokens=2))
    model = ModelConfig(model=str(broken), device="cpu", dtype="float32")
    with pytest.raises(ModelLoadError) as err:
        load(model)
    msg = str(err.value)
    assert msg.startswith(f"{broken}: {len(gone)} of the model's tensors are missing"), msg
    assert "layers.0." in msg and "\n" not in msg and "would be random" in msg
    (broken / "config.json").write_text(random_cfg)
    with caplog.at_level("WARNING", logger="framepipe"):
        g = load(model)
    assert g.describe()["random_weights"] is True
    assert f"{len(gone)} of the model's tensors are missing" in caplog.text


def test_a_refused_checkpoint_is_one_line_without_transformers_load_report(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """framepipe's one line says which tensors are missing; transformers' own multi-line
    LOAD REPORT table (and its "checkpoint seem corrupted" note) went to stderr before it."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    kept = {k: v for k, v in tensors.items() if "embed_tokens" not in k}
    save_file(kept, broken / "model.safetensors")
    cfg = json.loads((broken / "config.json").read_text())
    del cfg["framepipe_random_weights"]  # as a real model's config
    (broken / "config.json").write_text(json.dumps(cfg))
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    hf = logging.getLogger("transformers")
    hf.addHandler(handler)
    try:
        with pytest.raises(ModelLoadError, match="missing from its checkpoint"):
            Generator.load(ModelConfig(model=str(broken), device="cpu", dtype="float32"))
    finally:
        hf.removeHandler(handler)
    assert not any("LOAD REPORT" in m or "MISSING" in m for m in said), said


@pytest.mark.parametrize("offline", [True, False])
def test_missing_hub_model_fails_fast_and_clearly(
    offline: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # huggingface_hub reads HF_HUB_OFFLINE when it is imported, as a user's process does
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    hub.hub_reachable.cache_clear()
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        ModelSpec.inspect(ModelConfig(model="framepipe-tests/no-such-model"))
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert msg.startswith("framepipe-tests/no-such-model: not in the Hugging Face cache")
    assert "\n" not in msg
    if offline:
        assert "offline mode is on" in msg
    elif not hub.hub_reachable("framepipe-tests/no-such-model"):
        assert "cannot be reached" in msg


def test_cached_config_without_weights_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from huggingface_hub import constants

    snap = tmp_path / "hub" / "models--org--cfg-only" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    refs = snap.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 at import
    with pytest.raises(ModelLoadError, match="config is in the Hugging Face cache but the weights"):
        ModelSpec.inspect(ModelConfig(model="org/cfg-only"))


def test_not_a_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        ModelSpec.inspect(ModelConfig(model=str(tmp_path)))
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="it is a file"):
        ModelSpec.inspect(ModelConfig(model=str(f)))
    with pytest.raises(ModelLoadError, match="no such model folder"):
        ModelSpec.inspect(ModelConfig(model=str(tmp_path / "nope" / "deeper" / "x")))


def test_not_a_llava_model(tmp_path: Path) -> None:
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="'bert' is not a multi-image LLaVA model"):
        ModelSpec.inspect(ModelConfig(model=str(d)))


def test_safetensors_only(tmp_path: Path, tiny_model_dir: Path) -> None:
    d = tmp_path / "pickled"
    d.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            (d / f.name).write_bytes(f.read_bytes())
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        ModelSpec.inspect(ModelConfig(model=str(d)))
    (d / "pytorch_model.bin").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        ModelSpec.inspect(ModelConfig(model=str(d)))


# -- device, dtype, attention, quantization -------------------------------------------------


def test_cpu_bf16_detection_reads_the_flags() -> None:
    assert device_mod.cpu_has_fast_bf16(frozenset({"avx2", "avx512_bf16"}))
    assert device_mod.cpu_has_fast_bf16(frozenset({"amx_bf16"}))
    assert not device_mod.cpu_has_fast_bf16(frozenset({"avx2", "avx512f"}))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx512_bf16"}, torch.bfloat16), ({"amx_bf16"}, torch.bfloat16), ({"avx2"}, torch.float32)],
)
def test_auto_dtype_on_cpu(
    flags: set[str], expected: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: frozenset(flags))
    assert device_mod.resolve_dtype("auto", torch.device("cpu")) == expected
    assert device_mod.resolve_dtype("float32", torch.device("cpu")) == torch.float32


def test_runtime_choices_on_this_machine() -> None:
    rt = resolve_runtime(ModelConfig(device="cpu", dtype="bf16"))
    assert rt.device.type == "cpu" and rt.dtype == torch.bfloat16 and rt.attn == "sdpa"
    if not torch.cuda.is_available():
        assert resolve_runtime(ModelConfig()).device.type in ("cpu", "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA errors")
def test_cuda_only_options_refused_without_cuda() -> None:
    with pytest.raises(ConfigError, match="--quantize 4bit needs a CUDA GPU"):
        resolve_runtime(ModelConfig(device="cpu", quantize="4bit"))
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_runtime(ModelConfig(device="cuda"))
    with pytest.raises((ConfigError, ImportError), match="flash"):
        resolve_runtime(ModelConfig(device="cpu", attn="flash_attention_2"))


def test_bad_option_values() -> None:
    with pytest.raises(ConfigError, match="--quantize '3bit'"):
        ModelConfig(quantize="3bit")
    with pytest.raises(ConfigError, match="--dtype"):
        ModelConfig(dtype="int8")
    with pytest.raises(ConfigError, match="--attn"):
        ModelConfig(attn="magic")
    with pytest.raises(ConfigError, match="--batch-size"):
        GenerationSettings(batch_size=0)
    assert ModelConfig(dtype="bf16").dtype == "bfloat16"
