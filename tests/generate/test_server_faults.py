"""The ``openai`` backend (framepipe/generate/server.py) when the server or the network
misbehaves in ways ``transformers serve`` does not show by itself: a connection cut in the
middle of an answer, answers in shapes the client did not expect, a server that echoes the
API key, a base URL that is not the API root, a proxy in the environment, and Ctrl-C while
requests are in flight (servers on 127.0.0.1: a scripted one in a thread or a raw
``http.server``)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from remote_servers import (
    ModelServer,
    Reply,
    chat_reply,
    free_port,
    one_request_at_a_time,
    records_by_name,
    scripted_openai_server,
    serving,
    stopped_run,
)

from framepipe.config import SampleConfig
from framepipe.errors import ConfigError, ModelLoadError, StopRunError
from framepipe.generate import OpenAIBackend
from framepipe.runs.caption import caption

KEY = "sk-framepipe-fault-secret"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fault_videos")
    return engine_plugins.make_videos(d, 3, 20, seed=20, size=(32, 24))


def test_a_connection_cut_mid_answer_is_retried(
    videos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy or server that drops the connection after part of the body (the client sees
    an incomplete read, not an OSError) is retried like any connection error: no error
    logged, no batch failed, one request more than the clips."""
    answer = json.dumps(chat_reply("whole")[1]).encode()
    posts = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def send(self, data: bytes, cut: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:20] if cut else data)
            if cut:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)

        def do_GET(self) -> None:
            self.send(json.dumps({"data": [{"id": "scripted"}]}).encode(), cut=False)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            posts[0] += 1
            self.send(answer, cut=posts[0] == 1)  # the very first answer is cut

    out = tmp_path / "out.jsonl"
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        backend = OpenAIBackend(f"{url}/v1", max_concurrency=1, retries=2, backoff_s=0.01)
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert summary.done == 3 and not summary.failed and posts[0] == 3 + 1
    assert all(r["answers"] == ["whole"] for r in records_by_name(out).values())
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_an_answer_cut_for_every_try_is_its_clips_failed_record(
    videos: Path, tmp_path: Path
) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps({"data": [{"id": "scripted"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"choices": [')
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    out = tmp_path / "out.jsonl"
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        backend = OpenAIBackend(f"{url}/v1", max_concurrency=2, retries=1, backoff_s=0.01)
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert summary.done == 0 and len(summary.failed) == 3
    for source, error in summary.failed:
        assert error.startswith(source) and "\n" not in error
        assert f"the server at {url}/v1 failed (" in error and "after 2 tries" in error


def test_an_answer_in_content_parts_or_without_usage_is_recorded_as_sent(
    videos: Path, tmp_path: Path
) -> None:
    """Content as a list of text parts is the answer's text; a server that sends no token
    counts gets none in the record (never zeros); an answer of another shape fails its own
    clip only, naming the server."""

    def reply(body: dict[str, Any]) -> Reply:
        q = body["messages"][-1]["content"][-1]["text"]
        if q == "parts?":
            parts = [{"type": "text", "text": "two "}, {"type": "text", "text": "parts"}]
            usage = {"prompt_tokens": 11, "completion_tokens": 2}
            return 200, {"choices": [{"message": {"content": parts}}], "usage": usage}, {}
        if q == "counts?":
            return 200, {"choices": [{"message": {"content": "no counts"}}], "usage": None}, {}
        return 200, {"choices": [{"message": {"content": {"odd": 1}}}]}, {}

    out = tmp_path / "out.jsonl"
    with scripted_openai_server(reply) as (url, _):
        backend = OpenAIBackend(url, max_concurrency=2)
        for q in ("parts?", "counts?", "odd?"):
            caption(
                [videos / "v0.mp4"],
                tmp_path / f"{q[:-1]}.jsonl",
                backend=backend,
                questions=[q],
                sample=SampleConfig(n=2),
                workers=1,
            )
    parts = records_by_name(tmp_path / "parts.jsonl")["v0.mp4"]
    assert parts["answers"] == ["two parts"] and parts["tokens"] == {"prompt": 11, "new": [2]}
    counts = records_by_name(tmp_path / "counts.jsonl")["v0.mp4"]
    assert counts["answers"] == ["no counts"] and counts["status"] == "ok"
    assert "tokens" not in counts
    odd = records_by_name(tmp_path / "odd.jsonl")["v0.mp4"]
    assert odd["status"] == "failed" and f"the server at {url} sent no answer" in odd["error"]
    assert not out.exists()


def test_a_server_message_that_echoes_the_api_key_never_shows_it(
    videos: Path, tmp_path: Path
) -> None:
    def reply(body: dict[str, Any]) -> Reply:
        return 400, {"error": {"message": f"bad request from {body['authorization']}"}}, {}

    out = tmp_path / "out.jsonl"
    with scripted_openai_server(reply) as (url, _):
        backend = OpenAIBackend(url, api_key=KEY, max_concurrency=1)
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert len(summary.failed) == 3 and all("bad request from" in e for _, e in summary.failed)
    assert KEY not in out.read_text() and all(KEY not in e for _, e in summary.failed)

    def refused(body: dict[str, Any]) -> Reply:
        return 401, {"error": {"message": f"Incorrect API key: {body['authorization']}"}}, {}

    with scripted_openai_server(refused) as (url, _), pytest.raises(StopRunError) as err:
        backend = OpenAIBackend(url, api_key=KEY, max_concurrency=1)
        caption([videos], tmp_path / "o2.jsonl", backend=backend, sample=SampleConfig(n=2))
    assert "refused the API key" in str(err.value) and KEY not in str(err.value)


def test_a_base_url_that_is_not_the_api_root_names_the_one_to_try(
    openai_server: ModelServer,
) -> None:
    root = openai_server.url.removesuffix("/v1")
    for given in (root, root + "/", openai_server.url + "/chat/completions"):
        with pytest.raises(ModelLoadError) as err:
            OpenAIBackend(given).check(2, [], None)
        assert "404" in str(err.value) and f"--base-url {openai_server.url}" in str(err.value)


def test_a_base_url_with_a_password_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="user or password") as err:
        OpenAIBackend("http://me:hunter2@127.0.0.1:8000/v1")
    assert "hunter2" not in str(err.value)


def test_a_proxy_in_the_environment_is_named_when_the_server_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a cluster: http_proxy set for the internet, the server on a local host; the
    line names the proxy (never its password) and NO_PROXY, not just 'connection refused'."""
    proxy = f"http://me:pw-secret@127.0.0.1:{free_port()}"
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy)
    with scripted_openai_server(lambda body: chat_reply("x")) as (url, _):
        with pytest.raises(ModelLoadError) as err:
            OpenAIBackend(url).check(2, [], None)
        msg = str(err.value)
        assert f"through the proxy http://127.0.0.1:{proxy.rsplit(':', 1)[1]}" in msg
        assert "NO_PROXY" in msg and "pw-secret" not in msg
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        OpenAIBackend(url).check(2, [], None)  # bypassed: reached


def test_ctrl_c_while_requests_hang_stops_at_once_and_keeps_the_written_records(
    videos: Path, tmp_path: Path
) -> None:
    """The first batch is answered, the next request hangs; SIGINT stops the process in
    seconds (not when the hung request times out), the answered clips stay written, and
    the same command run again answers only the rest."""
    release = threading.Event()
    count = [0]

    def reply(body: dict[str, Any]) -> Reply:
        count[0] += 1
        if count[0] > 2:
            release.wait(120)
        return chat_reply("ok")

    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with scripted_openai_server(reply) as (url, received):
        args = [sys.executable, "-m", "framepipe", "caption", str(videos), "-n", "2"]
        args += ["-o", str(out), "--workers", "1", "--backend", "openai", "--base-url", url]
        args += ["--max-concurrency", "1", "--batch-size", "2"]
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 60
            while len(received) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(received) == 3
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            stdout, _ = proc.communicate(timeout=30)
            took = time.monotonic() - t0
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130 and took < 10, (took, stdout[-2000:])
        assert b"interrupted: 2 clip(s) written" in stdout and b"Traceback" not in stdout
        assert len(records_by_name(out)) == 2
        summary = caption(
            [videos], out, backend=OpenAIBackend(url), sample=SampleConfig(n=2), workers=1
        )
    assert (summary.done, summary.skipped) == (1, 2) and len(records_by_name(out)) == 3


def test_a_request_the_server_holds_is_tried_once_more_then_fails_its_clip(
    videos: Path, tmp_path: Path
) -> None:
    """A server that takes the request and never answers: each request waits
    ``--request-timeout``, is tried once more (not ``retries`` times: that would hold a
    clip for five timeouts), then fails its clip with one line naming the option; the
    run goes on."""
    release = threading.Event()

    def reply(body: dict[str, Any]) -> Reply:
        release.wait(60)
        return chat_reply("late")

    out = tmp_path / "out.jsonl"
    try:
        with scripted_openai_server(reply) as (url, received):
            backend = OpenAIBackend(
                url, max_concurrency=3, timeout_s=0.5, retries=4, backoff_s=0.01
            )
            summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
            posts = len(received)
    finally:
        release.set()
    assert summary.done == 0 and len(summary.failed) == 3
    assert posts == 6, posts  # each of the 3 clips: two tries
    for source, error in summary.failed:
        assert error.startswith(source) and "\n" not in error
        assert "no answer within 0.5 s, twice (--request-timeout)" in error


def test_a_request_timeout_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--request-timeout \(0\) must be > 0"):
        OpenAIBackend("http://127.0.0.1:1/v1", timeout_s=0)


class _Answering(http.server.BaseHTTPRequestHandler):
    """An OpenAI-shaped server that answers every request ("up")."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.send(json.dumps({"data": [{"id": "scripted"}]}).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send(json.dumps(chat_reply("up")[1]).encode())


def test_a_server_gone_for_good_mid_run_stops_the_run_and_the_same_command_resumes(
    videos: Path, tmp_path: Path
) -> None:
    """A night's run whose server goes away: requests that find nothing listening are
    tried again for ``wait_s`` (``--server-wait``), then the run stops with one line
    naming the server and the reason; no clip is failed for it (a million clips would be a
    million failed records), the clips answered stay, and the same run against the server
    started again answers the rest."""
    out = tmp_path / "out.jsonl"
    kw: dict[str, Any] = {"sample": SampleConfig(n=2), "workers": 1}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    port = server.server_address[1]
    with serving(server) as url:

        def gone(rec: dict[str, Any]) -> None:
            if server.socket.fileno() != -1:
                server.shutdown()
                server.server_close()

        # batches of 2 clips (twice max_concurrency): the server goes after the first
        msg, took = stopped_run(url, [videos], out, gone, **kw)
    assert "\n" not in msg and msg.startswith(f"the server at {url}/v1 refused every connection")
    assert "for 1 s" in msg and "--server-wait" in msg and 1 <= took < 10
    first = records_by_name(out)
    assert len(first) == 2 and all(r["status"] == "ok" for r in first.values())
    again = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Answering)
    with serving(again) as url:
        summary = caption([videos], out, backend=OpenAIBackend(f"{url}/v1"), **kw)
    assert (summary.done, summary.skipped, summary.failed) == (1, 2, [])
    assert len(records_by_name(out)) == 3 and all(
        r["status"] == "ok" for r in records_by_name(out).values()
    )


def test_a_server_restarted_mid_run_is_waited_for_and_no_clip_fails(
    videos: Path, tmp_path: Path
) -> None:
    """A server that refuses connections for a while (vLLM restarting) and comes back on
    the same port: the requests wait for it (not ``retries`` quick tries that fail clips)."""
    out = tmp_path / "out.jsonl"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    port = server.server_address[1]
    back: list[http.server.ThreadingHTTPServer] = []

    def restart() -> None:
        time.sleep(1.5)
        back.append(http.server.ThreadingHTTPServer(("127.0.0.1", port), _Answering))
        threading.Thread(target=back[0].serve_forever, daemon=True).start()

    with serving(server) as url:

        def gone(rec: dict[str, Any]) -> None:
            if server.socket.fileno() != -1:
                server.shutdown()
                server.server_close()
                threading.Thread(target=restart, daemon=True).start()

        backend = one_request_at_a_time(url, wait_s=30.0)
        summary = caption(
            [videos], out, backend=backend, on_record=gone, sample=SampleConfig(n=2), workers=1
        )
    for s in back:
        s.shutdown()
        s.server_close()
    assert (summary.done, summary.failed) == (3, [])
    assert all(r["answers"] == ["up"] for r in records_by_name(out).values())


def test_a_server_wait_that_is_negative_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--server-wait \(-1\) must be >= 0"):
        OpenAIBackend("http://127.0.0.1:1/v1", wait_s=-1)


def test_an_answer_with_null_content_is_its_clips_failed_record_not_an_empty_answer(
    videos: Path, tmp_path: Path
) -> None:
    """``content: null`` is no answer (a refusal, a tool call, a reasoning model that spent
    ``max_tokens`` thinking): the clip fails naming the server and what it sent, and a
    re-run asks again; an empty string is the model's own (empty) answer."""

    def reply(body: dict[str, Any]) -> Reply:
        q = body["messages"][-1]["content"][-1]["text"]
        message = {"role": "assistant", "content": "" if q == "empty?" else None}
        if q == "null?":
            message["reasoning_content"] = "Let me think"
        return 200, {"choices": [{"message": message, "finish_reason": "length"}]}, {}

    with scripted_openai_server(reply) as (url, _):
        for q in ("null?", "empty?"):
            caption(
                [videos / "v0.mp4"],
                tmp_path / f"{q[:-1]}.jsonl",
                backend=OpenAIBackend(url, max_concurrency=1),
                questions=[q],
                sample=SampleConfig(n=2),
                workers=1,
            )
    null = records_by_name(tmp_path / "null.jsonl")["v0.mp4"]
    assert null["status"] == "failed" and not null.get("answers")
    assert f"the server at {url} sent no answer" in null["error"]
    assert "'content': None" in null["error"] and "\n" not in null["error"]
    empty = records_by_name(tmp_path / "empty.jsonl")["v0.mp4"]
    assert empty["status"] == "ok" and empty["answers"] == [""]
