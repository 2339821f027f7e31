"""Real servers on 127.0.0.1 for the remote-input and remote-output tests: an HTTP file
server in a thread (Content-Length, Last-Modified, ETag, HEAD; it counts the GETs of each
path) and an S3-compatible server process (moto's server mode; the ``s3`` and
``s3_credentials`` fixtures, for the modules that import them)."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

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


class _Handler(http.server.SimpleHTTPRequestHandler):
    gets: Counter[str]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def end_headers(self) -> None:
        path = Path(self.translate_path(self.path))
        if path.is_file():
            st = path.stat()
            self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
        super().end_headers()

    def do_GET(self) -> None:
        self.gets[self.path] += 1
        super().do_GET()


@contextlib.contextmanager
def http_server(root: Path, port: int = 0) -> Iterator[tuple[str, Counter[str]]]:
    """Serve ``root`` on 127.0.0.1 (on ``port``, else any free one); yields the base URL and
    the GET count per path."""
    gets: Counter[str] = Counter()
    handler = type("Handler", (_Handler,), {"gets": gets})

    def make(*args: object, **kwargs: object) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", gets
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


Served = tuple[Path, str, Counter[str]]
"""The served folder, the server's URL and the count of GETs per path."""


@contextlib.contextmanager
def served_videos(root: Path) -> Iterator[Served]:
    """``root`` served over HTTP, holding two small videos (``clips/a.mp4``: 30 frames,
    ``b.mp4``: 20) and ``bad.mp4``, which is no video."""
    import engine_plugins

    engine_plugins.make_video(root / "clips" / "a.mp4", 30, seed=3)
    engine_plugins.make_video(root / "b.mp4", 20, seed=4)
    (root / "bad.mp4").write_bytes(bytes(range(256)) * 20)
    with http_server(root) as (url, gets):
        yield root, url, gets


@contextlib.contextmanager
def moto_s3_server() -> Iterator[str]:
    """An S3-compatible server process (``python -m moto.server``) on 127.0.0.1; yields its
    endpoint URL. The AWS_* test credentials must be in the environment (``S3_ENV``)."""
    port = free_port()
    env = {**os.environ, **S3_ENV}
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
