"""The ``openai`` backend behind a gateway (a load balancer, an ingress, a Kubernetes
service in front of vLLM): while no server is behind it, the gateway answers 502, 503 or
504 itself, often without ``Retry-After``. That is a server that is down, like one that
refuses every connection: waited for (``--server-wait``) without failing clips, and a run
stopped with one line naming the status once it has lasted (framepipe/generate/server.py).
A gateway's error for one request while the server answers the others stays that
request's own. Seen from a scripted gateway on 127.0.0.1."""

from __future__ import annotations

import http
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from remote_servers import (
    chat_reply,
    one_request_at_a_time,
    records_by_name,
    serving,
    stopped_run,
)

from framepipe.config import SampleConfig
from framepipe.generate import OpenAIBackend
from framepipe.runs.caption import caption


def nginx_page(code: int) -> bytes:
    """The page nginx answers for ``code`` with no server behind it."""
    status = f"{code} {http.HTTPStatus(code).phrase}"
    return (
        f"<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}"
        "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gateway_videos")
    return engine_plugins.make_videos(d, 3, 12, seed=60, size=(32, 24))


class Gateway:
    """What the gateway answers a chat request: ``status(body)`` gives an error status and
    its headers, or None to pass it to a server that answers "up"."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[int] = []
        """The status answered to each POST, in order."""
        self.first_post: float | None = None

    def status(self, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        return None

    def server(self) -> http.server.ThreadingHTTPServer:
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def send(self, code: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                data = json.dumps({"data": [{"id": "scripted"}]}).encode()
                self.send(200, data, {"Content-Type": "application/json"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with gateway.lock:
                    gateway.first_post = gateway.first_post or time.monotonic()
                got = gateway.status(body)
                with gateway.lock:
                    gateway.posts.append(got[0] if got else 200)
                if got is None:
                    data = json.dumps(chat_reply("up")[1]).encode()
                    self.send(200, data, {"Content-Type": "application/json"})
                else:
                    self.send(got[0], nginx_page(got[0]), {"Content-Type": "text/html", **got[1]})

        return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)


class Restarting(Gateway):
    """503 for every request from the first one for ``down_s`` seconds (the server behind
    restarts), then the server's answers."""

    def __init__(self, down_s: float, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.down_s, self.headers = down_s, headers or {}

    def status(self, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        assert self.first_post is not None
        if time.monotonic() - self.first_post < self.down_s:
            return 503, self.headers
        return None


def test_a_gateway_answering_503_while_the_server_restarts_is_waited_for_and_no_clip_fails(
    videos: Path, tmp_path: Path
) -> None:
    """503 without Retry-After for longer than a request's retries take: before, every
    clip in flight failed after its retries (a night's run of failed records); now the
    requests wait for the server like for one that refuses connections."""
    gateway = Restarting(1.5)
    out = tmp_path / "out.jsonl"
    with serving(gateway.server()) as url:
        backend = OpenAIBackend(
            f"{url}/v1", max_concurrency=2, retries=1, backoff_s=0.01, wait_s=30.0
        )
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert (summary.done, summary.failed) == (3, [])
    assert all(r["answers"] == ["up"] for r in records_by_name(out).values())
    assert 503 in gateway.posts


def test_a_gateways_retry_after_is_respected_while_the_server_is_down(
    videos: Path, tmp_path: Path
) -> None:
    gateway = Restarting(2.2, {"Retry-After": "1"})
    out = tmp_path / "out.jsonl"
    with serving(gateway.server()) as url:
        backend = OpenAIBackend(
            f"{url}/v1", max_concurrency=1, retries=1, backoff_s=0.01, wait_s=30.0
        )
        summary = caption(
            [videos / "v0.mp4"], out, backend=backend, sample=SampleConfig(n=2), workers=1
        )
    assert (summary.done, summary.failed) == (1, [])
    assert 3 <= gateway.posts.count(503) <= 4  # asked again after 1 s each time, not 0.01 s


class Broken(Gateway):
    """The server answers until ``broken`` is set, then the gateway answers 502."""

    broken = False

    def status(self, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        return (502, {}) if self.broken else None


def test_a_gateway_answering_502_for_good_stops_the_run_with_one_line_and_the_same_command_resumes(
    videos: Path, tmp_path: Path
) -> None:
    """The server behind the gateway is gone for good: the run stops after ``wait_s`` with
    one line naming the gateway's status; no clip is failed for it, and the same command,
    once the server is back, answers the clips left."""
    gateway = Broken()
    out = tmp_path / "out.jsonl"
    kw: dict[str, Any] = {"sample": SampleConfig(n=2), "workers": 1}

    def breaks(rec: dict[str, Any]) -> None:
        gateway.broken = True

    with serving(gateway.server()) as url:
        msg, took = stopped_run(url, [videos], out, breaks, **kw)
        assert "\n" not in msg and 1 <= took < 10
        assert msg.startswith(
            f"the server at {url}/v1 answered 502 to every request for 1 s "
            "(502: 502 Bad Gateway): start it again and run the same command"
        )
        first = records_by_name(out)
        assert 1 <= len(first) <= 2 and all(r["status"] == "ok" for r in first.values())
        gateway.broken = False
        summary = caption([videos], out, backend=one_request_at_a_time(url, wait_s=1.0), **kw)
    assert (summary.done, summary.skipped, summary.failed) == (3 - len(first), len(first), [])
    assert len(records_by_name(out)) == 3 and all(
        r["status"] == "ok" for r in records_by_name(out).values()
    )


class OneSlow(Gateway):
    """The gateway times out (504) on the first clip's request, every time; the server
    answers the others."""

    slow: str | None = None

    def status(self, body: dict[str, Any]) -> tuple[int, dict[str, str]] | None:
        image = body["messages"][-1]["content"][0]["image_url"]["url"]
        with self.lock:
            self.slow = self.slow or image
        return (504, {}) if image == self.slow else None


def test_a_gateway_error_for_one_request_while_the_server_answers_others_fails_only_its_clip(
    videos: Path, tmp_path: Path
) -> None:
    """A 504 that is the request's own (the gateway times out on it alone) is not the
    server being down: once the server has answered another request, its tries count, and
    its clip fails after ``retries`` (not a wait of ``--server-wait`` and a stopped run)."""
    gateway = OneSlow()
    out = tmp_path / "out.jsonl"
    with serving(gateway.server()) as url:
        backend = OpenAIBackend(
            f"{url}/v1", max_concurrency=2, retries=1, backoff_s=0.01, wait_s=30.0
        )
        t0 = time.monotonic()
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert time.monotonic() - t0 < 10 and summary.done == 2 and len(summary.failed) == 1
    error = summary.failed[0][1]
    assert "\n" not in error and "failed (504: 504 Gateway Timeout) after 2 tries" in error
