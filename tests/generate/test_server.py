"""The ``openai`` backend (framepipe/generate/server.py) against real servers on 127.0.0.1.

``transformers serve`` with the tiny model: the same answers as the in-process backend
(float32, greedy), records that name the backend, URL and model but never the key; a server
killed mid-run gives failed records, the run goes on, and a re-run completes them; a context
too short for n frames stops the run with one line; a server that is down is a one-line
error before any decoding. A scripted OpenAI-shaped server answers what other servers send:
vLLM's one-image limit stops the run after the first request, 429 and 5xx are retried with
backoff, a request that keeps failing is its clip's failed record, a refused key stops the
run; the frames arrive as lossless PNG and the settings as API parameters."""

from __future__ import annotations

import base64
import io
import json
import pickle
import time
from pathlib import Path
from typing import Any

import engine_plugins
import numpy as np
import pytest
from click.testing import CliRunner
from remote_servers import (
    ModelServer,
    Reply,
    chat_reply,
    free_port,
    scripted_openai_server,
    transformers_serve,
)

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.errors import ConfigError, ModelLoadError, StopRunError
from framepipe.generate import GenerationSettings, ModelConfig, OpenAIBackend
from framepipe.generate.config import answer_seed
from framepipe.output import read_output, read_records
from framepipe.runs.caption import Pipeline, caption
from framepipe.sources import open_source

QUESTIONS = ["What is shown?", "Describe the colours."]
SETTINGS = GenerationSettings(max_new_tokens=8)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("server_videos")
    return engine_plugins.make_videos(d, 3, 30, seed=10, size=(64, 48))


def by_clip(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    recs = list(read_records(path))
    out = {(Path(r["source"]).name, r["clip"]["index"]): r for r in recs}
    assert len(out) == len(recs), "a clip has more than one record"
    return out


def test_same_answers_as_the_in_process_backend(
    openai_server: ModelServer, tiny_model_dir: Path, videos: Path, tmp_path: Path
) -> None:
    kw: dict[str, Any] = {"sample": SampleConfig(n=3), "questions": QUESTIONS, "workers": 1}
    model = ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32")
    local = caption([videos], tmp_path / "local.jsonl", model=model, settings=SETTINGS, **kw)
    key = "sk-framepipe-test-secret"
    backend = OpenAIBackend(openai_server.url, settings=SETTINGS, api_key=key, max_concurrency=4)
    served = caption([videos], tmp_path / "served.jsonl", backend=backend, **kw)
    assert local.ok and served.ok and served.done == local.done == 3
    a, b = by_clip(tmp_path / "local.jsonl"), by_clip(tmp_path / "served.jsonl")
    assert a.keys() == b.keys()
    for clip, rec in a.items():
        got = b[clip]
        assert got["answers"] == rec["answers"] and any(rec["answers"])
        assert got["indices"] == rec["indices"] and got["questions"] == rec["questions"]
        assert got["model"] == {
            "backend": "openai",
            "base_url": openai_server.url,
            "id": str(tiny_model_dir),
            "random_weights": True,
        }
        assert got["note"] == rec["note"]  # labelled random, as in process
        assert got["generation"] == {"max_new_tokens": 8, "do_sample": False}
        assert got["key"] != rec["key"]  # the backend is part of the resume key
        assert got["tokens"]["prompt"] == rec["tokens"]["prompt"]  # the same prompt
        assert len(got["tokens"]["new"]) == 2
        assert got["truncated"] == rec["truncated"] == [n == 8 for n in rec["tokens"]["new"]]
    assert key not in (tmp_path / "served.jsonl").read_text() and key not in repr(backend)
    again = caption([videos], tmp_path / "served.jsonl", backend=backend, **kw)
    assert (again.done, again.skipped) == (0, 3)


def test_a_server_killed_mid_run_stops_the_run_and_a_rerun_completes_it(
    openai_server: ModelServer, tiny_model_dir: Path, videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    kw: dict[str, Any] = {"sample": SampleConfig(n=2, clip_seconds=0.5), "workers": 1}
    with transformers_serve(tiny_model_dir, tmp_path / "serve.log") as server:
        backend = OpenAIBackend(
            server.url, settings=SETTINGS, max_concurrency=1, backoff_s=0.05, wait_s=0.5
        )
        with pytest.raises(StopRunError) as err:  # the server is gone after the first answer
            caption([videos], out, backend=backend, on_record=lambda rec: server.kill(), **kw)
    assert str(err.value).startswith(f"the server at {server.url} refused every connection")
    first = by_clip(out)  # the clips answered before it went (requests in flight: 1 or more)
    assert 1 <= len(first) < 6 and all(r["status"] == "ok" for r in first.values())
    # the same model served at another address: the resume key holds the model, not the URL
    second = caption(
        [videos], out, backend=OpenAIBackend(openai_server.url, settings=SETTINGS), **kw
    )
    assert (second.done, second.skipped, len(second.failed)) == (6 - len(first), len(first), 0)
    recs = by_clip(out)  # exactly one record per clip, all answered
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs.values())


def test_a_context_too_short_for_n_frames_stops_the_run_with_one_line(
    openai_server: ModelServer, videos: Path, tmp_path: Path
) -> None:
    backend = OpenAIBackend(openai_server.url, settings=SETTINGS, max_concurrency=2)
    out = tmp_path / "out.jsonl"
    with pytest.raises(StopRunError) as err:
        caption([videos], out, backend=backend, sample=SampleConfig(n=6), workers=1)
    msg = str(err.value)
    assert "\n" not in msg and "too short a context for 6 frames" in msg
    assert "--max-model-len" in msg and "fewer frames (-n)" in msg
    assert not out.exists()  # no failed record per clip
    args = ["caption", str(videos), "-n", "6", "-o", str(out), "--workers", "1"]
    r = CliRunner().invoke(cli, [*args, "--backend", "openai", "--base-url", openai_server.url])
    assert r.exit_code == 1 and "too short a context for 6 frames" in r.output
    assert not out.exists()


def test_the_cli_asks_the_server(openai_server: ModelServer, videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = ["caption", str(videos), "-n", "2", "-o", str(out), "--max-new-tokens", "4"]
    args += ["--backend", "openai", "--base-url", openai_server.url, "--max-concurrency", "2"]
    r = CliRunner().invoke(cli, [*args, "--api-key", "sk-cli-secret"])
    assert r.exit_code == 0, r.output
    assert "3 clip(s) answered" in r.output and "sk-cli-secret" not in r.output
    assert {rec["model"]["backend"] for rec in by_clip(out).values()} == {"openai"}
    r = CliRunner().invoke(cli, ["caption", str(videos), "-o", str(out), "--backend", "openai"])
    assert r.exit_code == 2 and "--backend openai needs --base-url" in r.output


def test_a_server_down_at_start_is_one_line_before_any_decoding(
    videos: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        caption([videos], tmp_path / "out.jsonl", backend=OpenAIBackend(url), workers=1)
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert msg.startswith(f"cannot reach the server at {url} (") and "--base-url" in msg
    assert not (tmp_path / "out.jsonl").exists()


def test_a_model_the_server_does_not_serve_is_refused_at_start(
    openai_server: ModelServer,
) -> None:
    backend = OpenAIBackend(openai_server.url, model="org/another-model")
    with pytest.raises(ConfigError, match="does not serve model 'org/another-model'"):
        backend.check(2, [QUESTIONS], None)


# -- a scripted server: what other servers send ------------------------------------------------

VLLM_ONE_IMAGE = {
    "object": "error",
    "message": "At most 1 image(s) may be provided in one request. You can set "
    "`--limit-mm-per-prompt` to increase this limit if needed.",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}


def png_frames(body: dict[str, Any]) -> list[np.ndarray]:
    from PIL import Image

    parts = body["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert all(u.startswith("data:image/png;base64,") for u in urls)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))) for u in urls]


def test_vllms_one_image_limit_stops_the_run_after_the_first_request(
    videos: Path, tmp_path: Path
) -> None:
    def reply(body: dict[str, Any]) -> Reply:
        return (400, VLLM_ONE_IMAGE, {}) if len(png_frames(body)) > 1 else chat_reply("ok")

    out = tmp_path / "out.jsonl"
    with scripted_openai_server(reply) as (url, received):
        backend = OpenAIBackend(url, max_concurrency=1)
        with pytest.raises(StopRunError) as err:
            caption([videos], out, backend=backend, sample=SampleConfig(n=4), workers=1)
    msg = str(err.value)
    assert "takes at most 1 image(s) per prompt and a clip has 4" in msg and "\n" not in msg
    assert "start vLLM with --limit-mm-per-prompt '{\"image\": 4}'" in msg
    assert len(received) == 1 and not out.exists()


def test_a_pipeline_run_again_after_the_server_is_fixed_asks_it_again(
    videos: Path, tmp_path: Path
) -> None:
    fixed = False

    def reply(body: dict[str, Any]) -> Reply:
        return chat_reply("ok") if fixed else (400, VLLM_ONE_IMAGE, {})

    out = tmp_path / "out.jsonl"
    with scripted_openai_server(reply) as (url, received):
        pipe = Pipeline(backend=OpenAIBackend(url, max_concurrency=1), sample=SampleConfig(n=2))
        with pytest.raises(StopRunError):
            pipe.run([videos], out)
        fixed = True  # restarted with --limit-mm-per-prompt: the same pipeline goes on
        summary = pipe.run([videos], out)
    assert summary.ok and summary.done == 3 and len(received) == 1 + 3


def test_the_api_key_from_the_environment_travels_with_the_backend(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster's actors may not have the driver's environment: the key is read where the
    run starts and goes with the backend (never into its repr or the records)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with scripted_openai_server(lambda body: chat_reply("x")) as (url, received):
        backend = OpenAIBackend(url, max_concurrency=1)
        monkeypatch.delenv("OPENAI_API_KEY")
        on_actor = pickle.loads(pickle.dumps(backend))
        caption([videos], tmp_path / "o.jsonl", backend=on_actor, sample=SampleConfig(n=2))
    assert received and all(b["authorization"] == "Bearer sk-from-env" for b in received)
    assert "sk-from-env" not in repr(on_actor)
    assert "sk-from-env" not in (tmp_path / "o.jsonl").read_text()


def test_429_and_5xx_are_retried_and_frames_arrive_losslessly(videos: Path, tmp_path: Path) -> None:
    script = iter([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})] * 2)

    def reply(body: dict[str, Any]) -> Reply:
        return next(script, None) or chat_reply(f"{len(png_frames(body))} frames")

    out = tmp_path / "out.jsonl"
    with scripted_openai_server(reply) as (url, received):
        backend = OpenAIBackend(url, max_concurrency=1, api_key="sk-k", backoff_s=0.01)
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert summary.ok and summary.done == 3 and len(received) == 3 + 2
    recs = by_clip(out)
    for rec in recs.values():
        assert rec["answers"] == ["2 frames"] and rec["model"]["id"] == "scripted"
        assert rec["tokens"] == {"prompt": 11, "new": [2]}
    sent = received[2:]  # the last request of each clip, with the frames framepipe read
    for body in sent:
        assert body["authorization"] == "Bearer sk-k"
        assert body["max_tokens"] == 128 and body["temperature"] == 0.0 and "seed" not in body
    read = {}
    for (name, _), rec in recs.items():
        with open_source(videos / name) as src:
            read[name] = [np.asarray(f) for f in src.read(rec["indices"]).images()]
    got = [png_frames(b) for b in sent]
    for frames in read.values():
        assert any(
            len(g) == len(frames) and all(np.array_equal(x, y) for x, y in zip(g, frames))
            for g in got
        )


def test_a_request_that_keeps_failing_is_its_clips_failed_record(
    videos: Path, tmp_path: Path
) -> None:
    """A 500 is the request's own (a 503 to every request is a server that is down: see
    test_server_gateway.py)."""

    def reply(body: dict[str, Any]) -> Reply:
        return 500, {"error": {"message": "engine\nrestarting"}}, {}

    out = tmp_path / "out.jsonl"
    with scripted_openai_server(reply) as (url, received):
        backend = OpenAIBackend(url, max_concurrency=2, retries=2, backoff_s=0.01)
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert summary.done == 0 and len(summary.failed) == 3 and len(received) == 3 * 3
    for source, error in summary.failed:
        assert error.startswith(source) and "\n" not in error
        assert "(500: engine restarting) after 3 tries" in error
    assert all(r["status"] == "failed" for r in by_clip(out).values())


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (401, "Incorrect API key provided", "refused the API key (401: Incorrect API key"),
        (404, "The model `scripted` does not exist.", "does not serve model 'scripted'"),
        (
            400,
            "This model's maximum context length is 4096 tokens. However, you requested 9000 "
            "tokens (8900 in the messages, 100 in the completion).",
            "too short a context for 2 frames",
        ),
        (
            400,
            "The decoder prompt (length 9000) is longer than the maximum model length of 4096.",
            "too short a context for 2 frames",
        ),
    ],
)
def test_an_error_every_request_would_hit_stops_the_run(
    videos: Path, tmp_path: Path, status: int, message: str, expected: str
) -> None:
    """What vLLM and OpenAI answer for a refused key, a model not served and a context too
    short: one line, no failed record per clip, no retry."""

    def reply(body: dict[str, Any]) -> Reply:
        return status, {"object": "error", "message": message, "code": status}, {}

    out = tmp_path / "o.jsonl"
    with scripted_openai_server(reply) as (url, received), pytest.raises(StopRunError) as err:
        backend = OpenAIBackend(url, max_concurrency=2)
        caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert 1 <= len(received) <= 2 and not out.exists()  # those in flight, no retries


def test_the_servers_settings_may_be_a_dict_or_a_generation_config_as_the_pipelines() -> None:
    """``OpenAIBackend(url, settings={"max_new_tokens": 8})``, as ``Pipeline`` takes them,
    was an AttributeError ('dict' object has no attribute 'batch_size')."""
    from transformers import GenerationConfig

    url = "http://127.0.0.1:9/v1"
    want = OpenAIBackend(url, settings=GenerationSettings(max_new_tokens=8)).settings
    assert OpenAIBackend(url, settings={"max_new_tokens": 8}).settings == want
    assert OpenAIBackend(url, settings=GenerationConfig(max_new_tokens=8)).settings == want
    with pytest.raises(ConfigError, match="no field 'eos_token_id'"):  # not the server's to check
        OpenAIBackend(url, settings=GenerationConfig(eos_token_id=3))


def test_sampling_settings_are_sent_as_api_parameters(videos: Path, tmp_path: Path) -> None:
    """Each answer's own seed, from the run's, the clip's record key and the question: two
    clips (or questions) never share a stream of draws, whatever batches they were in."""
    with scripted_openai_server(lambda body: chat_reply("x")) as (url, received):
        s = GenerationSettings(max_new_tokens=5, do_sample=True, temperature=0.7, top_p=0.9)
        backend = OpenAIBackend(url, settings=s, max_concurrency=1)
        out = tmp_path / "o.jsonl"
        caption([videos], out, backend=backend, questions=QUESTIONS, workers=1)
    body = received[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (5, 0.7, 0.9)
    keys = sorted(r["key"] for r in by_clip(out).values())
    expected = sorted(answer_seed(0, k, q) for k in keys for q in range(2))
    assert sorted(b["seed"] for b in received) == expected and len(set(expected)) == 6
    assert "top_k" not in body and json.dumps(backend.settings.to_json()) == json.dumps(
        {"max_new_tokens": 5, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 0}
    )
    with pytest.raises(ConfigError, match="no OpenAI API equivalent"):
        OpenAIBackend(url, settings=GenerationSettings(num_beams=2))


def test_an_answer_the_server_cut_at_max_tokens_is_marked_truncated(
    videos: Path, tmp_path: Path
) -> None:
    """``finish_reason: "length"`` marks the answer truncated, ``stop`` does not; a server
    that sends no reason leaves it unknown (no value made up), in JSONL and Parquet alike."""
    reasons = {QUESTIONS[0]: "length", QUESTIONS[1]: "stop"}

    def reply(body: dict[str, Any]) -> Reply:
        status, data, headers = chat_reply("x")
        question = body["messages"][-1]["content"][-1]["text"]  # type: ignore[index]
        if question in reasons:
            data["choices"][0]["finish_reason"] = reasons[question]  # type: ignore[index]
        return status, data, headers

    kw: dict[str, Any] = {"sample": SampleConfig(n=2), "workers": 1}
    with scripted_openai_server(reply) as (url, _):
        backend = OpenAIBackend(url, max_concurrency=2)
        for out in (tmp_path / "o.jsonl", tmp_path / "o.parquet"):
            caption([videos], out, backend=backend, questions=QUESTIONS, **kw)
            recs = list(read_output(out))
            assert len(recs) == 3 and all(r["truncated"] == [True, False] for r in recs)
        caption([videos], tmp_path / "n.jsonl", backend=backend, questions=["Other?"], **kw)
    assert all(r["truncated"] is None for r in by_clip(tmp_path / "n.jsonl").values())
