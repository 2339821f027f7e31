"""Real servers on 127.0.0.1 for the tests: an HTTP file server in a thread (Content-Length,
Last-Modified, ETag, HEAD; it counts the GETs of each path; it can be told to misbehave on a
path: :class:`Fault`), an S3-compatible server process
(moto's server mode; the ``s3`` and ``s3_credentials`` fixtures, for the modules that import
them), an OpenAI-compatible server process (``transformers serve`` with a local model) and a
scripted OpenAI-shaped server in a thread (it answers what a test tells it to, e.g. the
errors vLLM sends)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port nothing listens on (a dead server's address, or one to start a server on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Fault:
    """What the HTTP server does instead of answering one request for a path normally."""

    method: str = "GET"
    times: int | None = 1
    """How many requests it spoils (None: every one)."""
    status: int | None = None
    """Answer with this status (and ``headers``), no body."""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None
    """Send this many bytes of the body, wait ``pause_s`` (or until the server stops),
    then drop the connection."""
    pause_s: float = 0.0
    trickle_s: float | None = None
    """Send the body in 10 pieces over this many seconds."""
    extra: bytes = b""
    """Bytes sent after the file (the Content-Length counts them)."""


class _Handler(http.server.SimpleHTTPRequestHandler):
    gets: Counter[str]
    faults: dict[str, list[Fault]]
    released: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _fault(self) -> Fault | None:
        queue = self.faults.get(self.path.split("?")[0], [])
        for f in queue:
            if f.method == self.command:
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        queue.remove(f)
                return f
        return None

    def _misbehave(self, f: Fault) -> None:
        if f.status is not None:
            self.send_response(f.status)
            for k, v in f.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            super().end_headers()
            return
        body = Path(self.translate_path(self.path)).read_bytes() + f.extra
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        super().end_headers()
        if self.command == "HEAD":
            return
        if f.cut_after is not None:
            self.wfile.write(body[: f.cut_after])
            self.wfile.flush()
            self.released.wait(f.pause_s)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        pieces = 10 if f.trickle_s else 1
        step = -(-len(body) // pieces)
        for k in range(0, len(body), step):
            self.wfile.write(body[k : k + step])
            self.wfile.flush()
            if f.trickle_s:
                self.released.wait(f.trickle_s / pieces)

    def end_headers(self) -> None:
        path = Path(self.translate_path(self.path))
        if path.is_file():
            st = path.stat()
            self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
        super().end_headers()

    def do_GET(self) -> None:
        self.gets[self.path] += 1
        fault = self._fault()
        if fault is not None:
            self._misbehave(fault)
        else:
            super().do_GET()

    def do_HEAD(self) -> None:
        fault = self._fault()
        if fault is not None:
            self._misbehave(fault)
        else:
            super().do_HEAD()


@contextlib.contextmanager
def http_server(
    root: Path, port: int = 0, faults: dict[str, list[Fault]] | None = None
) -> Iterator[tuple[str, Counter[str]]]:
    """Serve ``root`` on 127.0.0.1 (on ``port``, else any free one); yields the base URL and
    the GET count per path. ``faults``: what it does wrong on which path (changes to the
    dict while it runs count)."""
    gets: Counter[str] = Counter()
    released = threading.Event()
    attrs = {"gets": gets, "faults": faults if faults is not None else {}, "released": released}
    handler = type("Handler", (_Handler,), attrs)

    def make(*args: object, **kwargs: object) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(root), **kwargs)

    try:
        with serving(http.server.ThreadingHTTPServer(("127.0.0.1", port), make)) as url:
            yield url, gets
    finally:
        released.set()  # a paused answer ends


@contextlib.contextmanager
def serving(server: http.server.ThreadingHTTPServer) -> Iterator[str]:
    """Run ``server`` in a thread until the block ends; yields its base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


Served = tuple[Path, str, Counter[str]]
"""The served folder, the server's URL and the count of GETs per path."""


@contextlib.contextmanager
def served_videos(root: Path, faults: dict[str, list[Fault]] | None = None) -> Iterator[Served]:
    """``root`` served over HTTP, holding two small videos (``clips/a.mp4``: 30 frames,
    ``b.mp4``: 20) and ``bad.mp4``, which is no video; ``faults`` as :func:`http_server`'s."""
    import engine_plugins

    engine_plugins.make_video(root / "clips" / "a.mp4", 30, seed=3)
    engine_plugins.make_video(root / "b.mp4", 20, seed=4)
    (root / "bad.mp4").write_bytes(bytes(range(256)) * 20)
    with http_server(root, faults=faults) as (url, gets):
        yield root, url, gets


@contextlib.contextmanager
def moto_s3_server(auth: bool = False) -> Iterator[str]:
    """An S3-compatible server process (``python -m moto.server``) on 127.0.0.1; yields its
    endpoint URL. The AWS_* test credentials must be in the environment (``S3_ENV``). With
    ``auth``, it checks the credentials of every request (and knows none)."""
    port = free_port()
    env = {**os.environ, **S3_ENV}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards each request to ``upstream`` (a port on 127.0.0.1), but holds the ``nth``
    change (PUT, POST, DELETE) whose path or body holds ``match``: never forwarded, never
    answered (``held`` is set) until the proxy stops."""

    protocol_version = "HTTP/1.1"
    upstream: int
    match: bytes
    nth: int
    seen: list[str]
    held: threading.Event
    released: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return body

    def _forward(self) -> None:
        import http.client

        body = self._body()
        if (
            self.command != "GET"
            and self.command != "HEAD"
            and self.match in (self.path.encode() + body)
        ):
            self.seen.append(f"{self.command} {self.path}")
            if len(self.seen) == self.nth:
                self.held.set()
                self.released.wait()
                self.close_connection = True
                return
        skip = {"transfer-encoding", "content-length", "connection", "expect"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        size = r.getheader("Content-Length", "0") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


@contextlib.contextmanager
def holding_proxy(
    upstream: str, match: str, nth: int
) -> Iterator[tuple[str, threading.Event, list[str], threading.Event]]:
    """A proxy in front of the server ``upstream`` (``http://127.0.0.1:PORT``) that holds
    the ``nth`` change whose path or body holds ``match`` (see :class:`_Proxy`); yields its
    URL, the event set once that change is held, the changes seen, and the event that
    releases it (its connection dropped unanswered: the client tries again)."""
    held, released, seen = threading.Event(), threading.Event(), []
    attrs = {
        "upstream": int(upstream.rsplit(":", 1)[1]),
        "match": match.encode(),
        "nth": nth,
        "seen": seen,
        "held": held,
        "released": released,
    }
    handler = type("Proxy", (_Proxy,), attrs)
    try:
        with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
            yield url, held, seen, released
            released.set()
    finally:
        released.set()


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """An S3-compatible server for the module; yields its endpoint URL."""
    mp = pytest.MonkeyPatch()
    for k, v in S3_ENV.items():
        mp.setenv(k, v)
    try:
        with moto_s3_server() as url:
            yield url
    finally:
        mp.undo()


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test server's credentials, for every test of a module that imports this fixture
    (the client reads them from the environment, as on a real machine)."""
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)


@dataclass
class ModelServer:
    """A running ``transformers serve`` process (its own process group)."""

    proc: subprocess.Popen[bytes]
    url: str
    """The API root, ``http://127.0.0.1:PORT/v1``."""
    log: Path

    def kill(self) -> None:
        """Kill the server and the model process it started."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def transformers_serve(
    model_dir: Path,
    log: Path,
    *,
    max_model_len: int | None = None,
    port: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    extra: tuple[str, ...] = (),
    threads: int | None = 1,
) -> Iterator[ModelServer]:
    """``transformers serve`` with the model at ``model_dir`` on 127.0.0.1 (offline), as the
    only model it serves, with ``extra`` options and ``threads`` CPU threads (None: torch's
    default); its output goes to ``log``."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("transformers")
    args = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--device", device, "--dtype", dtype, "--log-level", "warning", *extra]
    if max_model_len is not None:
        args += ["--max-model-len", str(max_model_len)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=out, start_new_session=True)
    server = ModelServer(proc, f"http://127.0.0.1:{port}/v1", log)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(server.url + "/models", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"transformers serve did not start:\n{tail}") from None
                time.sleep(0.3)
        yield server
    finally:
        server.kill()


Reply = tuple[int, dict[str, object], dict[str, str]]
"""A scripted answer: status, JSON body, headers."""


def chat_reply(text: str, model: str = "scripted") -> Reply:
    """A successful chat completion answering ``text``."""
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }
    return 200, body, {}


@contextlib.contextmanager
def scripted_openai_server(
    reply: Callable[[dict[str, object]], Reply], models: tuple[str, ...] = ("scripted",)
) -> Iterator[tuple[str, list[dict[str, object]]]]:
    """An OpenAI-shaped server in a thread: ``GET /v1/models`` lists ``models``; each
    ``POST /v1/chat/completions`` gets ``reply(body)``. Yields the API root and the bodies
    received."""
    received: list[dict[str, object]] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def send(self, status: int, body: object, headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            data = [{"id": m, "object": "model", "max_model_len": 4096} for m in models]
            self.send(200, {"object": "list", "data": data}, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body["authorization"] = self.headers.get("Authorization")
            with lock:
                received.append(body)
            self.send(*reply(body))

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield f"{url}/v1", received


def records_by_name(path: Path) -> dict[str, dict[str, Any]]:
    """The records of a run against these servers by their input's file name (one each:
    asserted)."""
    from framepipe.output import read_records

    recs = list(read_records(path))
    out = {Path(r["source"]).name: r for r in recs}
    assert len(out) == len(recs), "a clip has more than one record"
    return out


def one_request_at_a_time(url: str, wait_s: float) -> Any:
    """An openai backend for the server at ``url`` (its API root) that asks one question at
    a time (batches of two clips), tries a failed request once more at once, and waits
    ``wait_s`` for a server that is down."""
    from framepipe.generate import GenerationSettings, OpenAIBackend

    return OpenAIBackend(
        f"{url}/v1",
        settings=GenerationSettings(batch_size=1),
        max_concurrency=1,
        retries=1,
        backoff_s=0.01,
        wait_s=wait_s,
    )


def stopped_run(
    url: str, paths: list[Path], out: Path, on_record: Callable[[Any], None], **kw: Any
) -> tuple[str, float]:
    """``caption`` of ``paths`` into ``out`` through :func:`one_request_at_a_time` (a 1 s
    wait for a server that is down), expected to stop (StopRunError): its message and the
    seconds the run took."""
    from framepipe.errors import StopRunError
    from framepipe.runs.caption import caption

    backend = one_request_at_a_time(url, wait_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(StopRunError) as err:
        caption(paths, out, backend=backend, on_record=on_record, **kw)
    return str(err.value), time.monotonic() - t0
