"""The ``openai`` backend keeps ``max_concurrency`` requests in flight across clips
(framepipe/generate/inflight.py): a slow answer holds no other clip back, so the next
clips' requests start while it runs, instead of the whole batch waiting for its slowest
request. Seen from a scripted server on 127.0.0.1 that counts the requests it holds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from remote_servers import Reply, chat_reply, scripted_openai_server

from framepipe.config import SampleConfig
from framepipe.generate import GenerationSettings, OpenAIBackend
from framepipe.output import read_records
from framepipe.runs.caption import caption, iter_caption

CLIPS = 12


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("inflight_videos")
    return engine_plugins.make_videos(d, CLIPS, 8, seed=40, size=(32, 24), digits=2)


class Counting:
    """A reply function that answers the first request slowly and the others at once, and
    counts the requests the server holds."""

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.now = self.most = self.posts = 0
        self.started_during_slow = 0
        """Requests that started while the slow one was held (itself included)."""
        self.slow_done = False

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self.lock:
            self.posts += 1
            first = self.posts == 1
            self.now += 1
            self.most = max(self.most, self.now)
            if not self.slow_done:
                self.started_during_slow += 1
        time.sleep(self.slow_s if first else 0.01)
        with self.lock:
            self.now -= 1
            self.slow_done = self.slow_done or first
        return chat_reply("ok")


def test_a_slow_answer_holds_no_other_clip_back_the_next_clips_requests_start_meanwhile(
    videos: Path, tmp_path: Path
) -> None:
    """Two requests at a time, batches of four clips: while the first clip's answer takes
    seconds, the other slot answers every other clip (before: the three others of its batch,
    then it idled until the slow answer came, the next batch waiting for it); never more
    than two requests held; one ok record per clip."""
    out = tmp_path / "out.jsonl"
    count = Counting(slow_s=4.0)
    with scripted_openai_server(count) as (url, _):
        backend = OpenAIBackend(url, settings=GenerationSettings(batch_size=4), max_concurrency=2)
        summary = caption([videos], out, backend=backend, sample=SampleConfig(n=2), workers=1)
    assert (summary.done, summary.failed) == (CLIPS, [])
    recs = list(read_records(out))
    assert sorted(Path(r["source"]).name for r in recs) == sorted(p.name for p in videos.iterdir())
    assert all(r["status"] == "ok" and r["answers"] == ["ok"] for r in recs)
    assert count.posts == CLIPS and count.most == 2
    # clip 5 (the first of the second batch) and on started before clip 1 was answered
    assert count.started_during_slow > 4, count.started_during_slow


def test_a_caller_that_stops_iterating_leaves_no_request_thread_and_no_request_held(
    videos: Path,
) -> None:
    """A record is handed out as soon as its clip is answered, while other clips' requests
    are held (before: when its whole batch was answered); a caller that stops
    (``break``) gets back at once, the requests in flight are dropped (their connections
    shut, so a server stops working on them) and their threads end; no request follows."""
    release = threading.Event()
    posts = [0]

    def reply(body: dict[str, Any]) -> Reply:
        posts[0] += 1
        if posts[0] == 1:
            time.sleep(1.0)  # the others are in flight when the first record comes
        else:
            release.wait(60)
        return chat_reply("ok")

    def request_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "framepipe-openai"]

    try:
        with scripted_openai_server(reply) as (url, received):
            backend = OpenAIBackend(url, max_concurrency=3)
            run = iter_caption([videos], None, backend=backend, sample=SampleConfig(n=2))
            t0 = time.monotonic()
            first = next(run)  # as soon as its clip is answered, not when its batch is
            assert first.status == "ok" and time.monotonic() - t0 < 30
            assert len(received) >= 2  # others held by the server
            t0 = time.monotonic()
            run.close()
            held = len(received)
            deadline = time.monotonic() + 10
            while request_threads() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not request_threads() and time.monotonic() - t0 < 10
            release.set()
            time.sleep(0.5)
            assert len(received) == held  # nothing asked after the caller stopped
    finally:
        release.set()
