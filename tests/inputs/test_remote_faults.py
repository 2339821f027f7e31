"""Remote inputs from an HTTP server on 127.0.0.1 that misbehaves: a slow download is not
counted against the decode timeout, a stalled one fails its input with one line (with and
without worker processes), a transient failure is tried again and a refusal is not, part
files of killed downloads are removed, and the errors say what happened."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from remote_servers import Fault, Served, served_videos

import framepipe.inputs.download as download
from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.inputs.remote import cache_path
from framepipe.output import read_records
from framepipe.runs.sample import MANIFEST, sample

FAULTS: dict[str, list[Fault]] = {}


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    FAULTS.clear()
    with served_videos(tmp_path / "www", FAULTS) as served:
        yield served


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 0.05)


def _by_source(out: Path) -> dict[str, dict[str, object]]:
    return {str(r["source"]): r for r in read_records(out / MANIFEST)}


def test_a_slow_download_is_not_counted_against_the_decode_timeout(
    served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    uri = f"{url}/b.mp4"
    FAULTS["/b.mp4"] = [Fault(trickle_s=3.0)]  # longer than the decode timeout, never idle
    out = tmp_path / "out"
    cfg = SampleConfig(n=2)
    s = sample([uri], out, cfg, cache_dir=tmp_path / "c", workers=1, decode_timeout_s=1.0)
    assert (s.done, s.failed) == (1, [])
    assert _by_source(out)[uri]["status"] == "ok"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stalled_download_fails_its_input_with_one_line(
    workers: int, served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    stalled, good = f"{url}/b.mp4", f"{url}/clips/a.mp4"
    FAULTS["/b.mp4"] = [Fault(cut_after=1000, pause_s=30)]
    cfg = SampleConfig(n=2, download_stall_s=1.0)
    out = tmp_path / "out"
    s = sample([stalled, good], out, cfg, cache_dir=tmp_path / "c", workers=workers)
    assert s.done == 1 and s.failed == [(stalled, f"{stalled}: download stalled (no data for 1 s)")]
    assert _by_source(out)[good]["status"] == "ok"
    staged = cache_path(stalled, tmp_path / "c")
    assert not [p for p in staged.parent.iterdir() if p.name.endswith(".part")]


def test_the_cli_says_a_stall_once_and_not_as_a_decoder_timeout(
    served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    uri = f"{url}/b.mp4"
    FAULTS["/b.mp4"] = [Fault(cut_after=1000, pause_s=30)]
    args = ["sample", uri, "-n", "2", "-o", str(tmp_path / "out"), "--workers", "1"]
    args += ["--cache-dir", str(tmp_path / "c"), "--decode-timeout", "5", "--download-stall", "1"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert res.output.count("download stalled (no data for 1 s)") == 1
    assert "decoder" not in res.output


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_part_files_of_killed_downloads_are_removed_when_the_object_is_downloaded(
    served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    uri, cache = f"{url}/b.mp4", tmp_path / "c"
    staged = cache_path(uri, cache)
    staged.parent.mkdir(parents=True)
    host = download.part_path(staged).name.rsplit("@", 1)[1].removesuffix(".part")
    dead = staged.with_name(f".b.mp4.0123456789ab.{_dead_pid()}@{host}.part")
    live = staged.with_name(f".b.mp4.ba9876543210.{os.getpid()}@{host}.part")
    old = staged.with_name(".b.mp4.00aa11bb22cc.part")  # an older version's, long idle
    for p in (dead, live, old):
        p.write_bytes(b"half a video")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    s = sample([uri], tmp_path / "out", SampleConfig(n=2), cache_dir=cache, workers=0)
    assert (s.done, s.failed) == (1, [])
    assert sorted(p.name for p in staged.parent.iterdir() if p.name.endswith(".part")) == [
        live.name
    ]


@pytest.mark.parametrize(
    "faults",
    [
        [Fault(status=503, times=2)],
        [Fault(status=429, headers={"Retry-After": "1"})],
        [Fault(status=502, method="HEAD"), Fault(status=502)],  # the metadata request
        [Fault(cut_after=1000)],  # the connection drops in the middle of the body
    ],
    ids=["503-twice", "429-retry-after", "502-on-stat", "reset"],
)
def test_a_transient_http_failure_is_tried_again(
    faults: list[Fault], served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    uri = f"{url}/b.mp4"
    FAULTS["/b.mp4"] = faults
    s = sample([uri], tmp_path / "out", SampleConfig(n=2), cache_dir=tmp_path / "c", workers=0)
    assert (s.done, s.failed) == (1, [])
    assert not FAULTS["/b.mp4"]  # every spoiled answer was asked for


def test_a_failure_that_lasts_fails_the_input_after_a_few_tries(
    served: Served, tmp_path: Path
) -> None:
    _, url, gets = served
    uri = f"{url}/b.mp4"
    FAULTS["/b.mp4"] = [Fault(status=503, times=None)]
    s = sample([uri], tmp_path / "out", SampleConfig(n=2), cache_dir=tmp_path / "c", workers=0)
    assert s.done == 0 and s.failed == [
        (uri, f"{uri}: cannot read the remote object (HTTP 503 Service Unavailable)")
    ]
    assert gets["/b.mp4"] == download.RETRIES + 1  # GETs after failed HEADs: one a try


def test_a_refusal_and_a_missing_object_are_not_tried_again(served: Served, tmp_path: Path) -> None:
    _, url, gets = served
    denied, gone = f"{url}/b.mp4", f"{url}/clips/a.mp4"
    FAULTS["/b.mp4"] = [Fault(status=403, times=None)]
    FAULTS["/clips/a.mp4"] = [Fault(status=404)]  # gone after its metadata was read
    cfg = SampleConfig(n=2)
    s = sample([denied, gone], tmp_path / "out", cfg, cache_dir=tmp_path / "c", workers=0)
    assert s.done == 0 and sorted(s.failed) == sorted(
        [
            (gone, f"{gone}: no such remote object"),
            (denied, f"{denied}: access denied (HTTP 403 Forbidden)"),
        ]
    )
    assert (gets["/b.mp4"], gets["/clips/a.mp4"]) == (1, 1)


def test_a_redirect_loop_says_too_many_redirects(served: Served, tmp_path: Path) -> None:
    _, url, _ = served
    uri = f"{url}/b.mp4"
    loop = {"status": 302, "headers": {"Location": "/b.mp4"}, "times": None}
    FAULTS["/b.mp4"] = [Fault(method="HEAD", **loop), Fault(method="GET", **loop)]
    s = sample([uri], tmp_path / "out", SampleConfig(n=2), cache_dir=tmp_path / "c", workers=0)
    why = "cannot read the remote object (too many redirects)"
    assert s.done == 0 and s.failed == [(uri, f"{uri}: {why}")]


def test_more_bytes_than_the_reported_size_say_the_object_changed(
    served: Served, tmp_path: Path
) -> None:
    root, url, _ = served
    uri = f"{url}/b.mp4"
    FAULTS["/b.mp4"] = [Fault(extra=b"x" * 100)]
    size = (root / "b.mp4").stat().st_size
    s = sample([uri], tmp_path / "out", SampleConfig(n=2), cache_dir=tmp_path / "c", workers=0)
    why = f"{size + 100} bytes arrived where its size was {size}"
    assert s.failed == [
        (uri, f"{uri}: the object changed during the download, or its size is wrong ({why})")
    ]
