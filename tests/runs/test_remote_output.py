"""Outputs in an object store, against an S3-compatible server process on 127.0.0.1 (moto's
server mode): a ``sample`` folder and ``caption``'s records and ``--frames-dir`` on
``s3://``: the frames are written to the store by the decoding processes, the records file
is published whole (under a temporary key, then moved), a resume on another machine (a
fresh cache) reads its state from the store, and a publish that fails leaves the store's
file as it was and loses nothing."""

from __future__ import annotations

import importlib.util
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from generator_doubles import EchoGenerator
from remote_servers import holding_proxy, s3, s3_credentials  # noqa: F401 - fixtures

import framepipe.read_clips
from framepipe.config import SampleConfig
from framepipe.errors import ConfigError, OutputError
from framepipe.output import read_output, read_records
from framepipe.report import write_report
from framepipe.runs.caption import Pipeline
from framepipe.runs.sample import sample

pytest.importorskip("s3fs")
pytest.importorskip("moto")

FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}


@pytest.fixture(scope="module")
def store(s3: str) -> Iterator[tuple[str, Any]]:  # noqa: F811
    """The endpoint and a client of the server, with a bucket ``out``."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("out")
    yield s3, fs


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    engine_plugins.make_video(d / "a.mp4", 30, seed=1)  # three clips
    engine_plugins.make_video(d / "b.mp4", 20, seed=2)  # two
    return d


def _cfg(endpoint: str) -> SampleConfig:
    return SampleConfig(n=2, clip_seconds=0.34, storage_options={"endpoint_url": endpoint, **FAST})


def _same(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "timings_s"}


def test_a_sample_folder_in_the_store(
    store: tuple[str, Any], videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, fs = store
    s = sample([videos], "s3://out/s/", _cfg(url), workers=1, cache_dir=tmp_path / "c1")
    assert s.ok and s.done == 5
    fs.invalidate_cache()
    fs.get_file("out/s/manifest.jsonl", str(tmp_path / "manifest.jsonl"))
    remote = {r["key"]: r for r in read_records(tmp_path / "manifest.jsonl")}
    assert sample([videos], tmp_path / "local", _cfg(url), workers=1).ok
    recs = {r["key"]: r for r in read_records(tmp_path / "local/manifest.jsonl")}
    assert remote.keys() == recs.keys() and len(remote) == 5
    for key, rec in recs.items():
        assert _same(remote[key]) == _same(rec)
        for frame in [*rec["frames"], rec["contact_sheet"]]:  # written by the worker
            assert fs.cat_file(f"out/s/{frame}") == (tmp_path / "local" / frame).read_bytes()
    keys = fs.find("out/s")
    assert "out/s/.manifest.jsonl.inputs" in keys  # its ledger, beside it
    assert not [k for k in keys if k.endswith(".tmp")]
    # another machine resumes from the store: nothing done again, no input opened
    opened: list[str] = []
    real = framepipe.read_clips.open_source
    monkeypatch.setattr(
        framepipe.read_clips, "open_source", lambda p, *a, **k: opened.append(p) or real(p, *a, **k)
    )
    again = sample([videos], "s3://out/s/", _cfg(url), workers=0, cache_dir=tmp_path / "c2")
    assert (again.done, again.skipped) == (0, 5) and opened == []


def test_caption_records_and_frames_in_the_store(
    store: tuple[str, Any], videos: Path, tmp_path: Path
) -> None:
    url, fs = store
    pipe = Pipeline(
        generator=EchoGenerator(),  # type: ignore[arg-type]
        sample=_cfg(url),
        workers=1,
        frames_dir="s3://out/c/frames",
    )
    s = pipe.run([videos], "s3://out/c/results.parquet", cache_dir=tmp_path / "c")
    assert s.ok and s.done == 5
    fs.invalidate_cache()
    fs.get_file("out/c/results.parquet", str(tmp_path / "results.parquet"))
    recs = list(read_output(tmp_path / "results.parquet"))
    assert len(recs) == 5 and all(r["answers"] for r in recs)
    for rec in recs:  # relative to the records file's folder in the store
        assert rec["frames"][0].startswith("frames/") and fs.exists(f"out/c/{rec['frames'][0]}")


def test_a_failed_publish_keeps_the_store_as_it_was_and_loses_nothing(
    store: tuple[str, Any], videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    url, fs = store
    cfg, cache, uri = _cfg(url), tmp_path / "cache", "s3://out/p/results.jsonl"
    pipe = Pipeline(generator=EchoGenerator(), sample=cfg, workers=0)  # type: ignore[arg-type]
    assert pipe.run([videos / "a.mp4"], uri, cache_dir=cache).done == 3
    fs.invalidate_cache()
    before = fs.cat_file("out/p/results.jsonl")

    def fail(*args: Any, **kw: Any) -> None:
        raise OSError("the store went away")

    with monkeypatch.context() as m:
        m.setattr(s3fs.S3FileSystem, "mv", fail)
        with pytest.raises(OutputError, match=r"s3://out/p/results.jsonl: cannot publish"):
            pipe.run([videos], uri, cache_dir=cache)
    fs.invalidate_cache()
    assert fs.cat_file("out/p/results.jsonl") == before  # whole, as it was
    assert not [k for k in fs.find("out/p") if k.endswith(".tmp")]
    s = pipe.run([videos], uri, cache_dir=cache)  # the failed run's records were kept here
    assert (s.done, s.skipped) == (0, 5)
    fs.invalidate_cache()
    fs.get_file("out/p/results.jsonl", str(tmp_path / "r.jsonl"))
    assert len(list(read_records(tmp_path / "r.jsonl"))) == 5


KILLED_IN_PUBLISH = """
import os, signal, sys
import s3fs
from framepipe.config import SampleConfig
from framepipe.runs.sample import sample
s3fs.S3FileSystem.mv = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
url, videos, cache = sys.argv[1:]
cfg = SampleConfig(n=2, storage_options={"endpoint_url": url})
sample([videos], "s3://out/k/", cfg, workers=0, cache_dir=cache)
"""


def test_a_driver_killed_while_it_publishes_leaves_no_stray_object_after_a_rerun(
    store: tuple[str, Any], videos: Path, tmp_path: Path
) -> None:
    url, fs = store
    cache = tmp_path / "cache"
    for _ in range(2):  # killed between the upload and the move, twice
        cmd = [sys.executable, "-c", KILLED_IN_PUBLISH, url, str(videos), str(cache)]
        proc = subprocess.run(cmd, capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    s = sample([videos], "s3://out/k/", _cfg(url), workers=0, cache_dir=cache)
    assert s.ok
    fs.invalidate_cache()
    assert sorted(k for k in fs.find("out/k") if "mp4-" not in k) == [
        "out/k/.manifest.jsonl.inputs",
        "out/k/manifest.jsonl",
    ]


SAMPLE = """
import sys
from framepipe.config import SampleConfig
from framepipe.runs.sample import sample
url, videos, cache, out = sys.argv[1:]
cfg = SampleConfig(n=2, clip_seconds=0.34, storage_options={"endpoint_url": url})
sample([videos], out, cfg, workers=0, cache_dir=cache)
"""


def _stored(fs: Any, folder: str, tmp: Path) -> dict[str, int]:
    """The records a reader of the store's ``folder`` gets (with its ledger, if any), as
    the count of records per source file name."""
    fs.invalidate_cache()
    tmp.mkdir()
    for name in ("manifest.jsonl", ".manifest.jsonl.inputs"):
        if fs.exists(f"{folder}/{name}"):
            fs.get_file(f"{folder}/{name}", str(tmp / name))
    counts: dict[str, int] = {}
    for rec in read_output(tmp / "manifest.jsonl"):
        name = Path(rec["source"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("step", range(1, 8))
def test_a_driver_killed_at_any_step_of_its_publish_keeps_an_inputs_records_till_new_ones_are_in(
    store: tuple[str, Any], videos: Path, tmp_path: Path, step: int
) -> None:
    url, fs = store
    shutil.copytree(videos, tmp_path / "v")
    a, out, folder = tmp_path / "v" / "a.mp4", f"s3://out/v{step}/", f"out/v{step}"
    assert sample([tmp_path / "v"], out, _cfg(url), workers=0, cache_dir=tmp_path / "c0").ok
    engine_plugins.make_video(a, 20, seed=7)  # a changes in place: two clips, not three
    with holding_proxy(url, "manifest.jsonl", step) as (proxy, held, seen, _):
        cmd = [sys.executable, "-c", SAMPLE, proxy, str(tmp_path / "v"), str(tmp_path / "c1"), out]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        while not held.wait(0.2):  # the step-th change to the records or the ledger
            assert proc.poll() is None, f"the publish ended after {seen}"
        proc.kill()
        proc.communicate(timeout=60)
    # every input has its records, of one version: the new ones, or still the old ones
    assert _stored(fs, folder, tmp_path / "s1") in (
        {"a.mp4": 3, "b.mp4": 2},
        {"a.mp4": 2, "b.mp4": 2},
    )
    # another machine goes on with b alone: a's records stay
    assert sample(
        [tmp_path / "v" / "b.mp4"], out, _cfg(url), workers=0, cache_dir=tmp_path / "c2"
    ).ok
    assert _stored(fs, folder, tmp_path / "s2").get("a.mp4") in (3, 2)
    # and with both: one record per clip of a's new version
    assert sample([tmp_path / "v"], out, _cfg(url), workers=0, cache_dir=tmp_path / "c3").ok
    assert _stored(fs, folder, tmp_path / "s3") == {"a.mp4": 2, "b.mp4": 2}


def test_a_rerun_with_nothing_to_do_writes_nothing_to_the_store_nor_leaves_a_staged_part(
    store: tuple[str, Any], videos: Path, tmp_path: Path
) -> None:
    url, _ = store
    cache = tmp_path / "cache"
    assert sample([videos], "s3://out/n/", _cfg(url), workers=0, cache_dir=cache).done == 5
    staged = sorted(p.name for p in cache.joinpath(".outputs").rglob("*"))
    with holding_proxy(url, "manifest.jsonl", 0) as (proxy, _, changes, _):
        cfg = SampleConfig(n=2, clip_seconds=0.34, storage_options={"endpoint_url": proxy})
        again = sample([videos], "s3://out/n/", cfg, workers=0, cache_dir=cache)
    assert (again.done, again.skipped) == (0, 5)
    assert changes == []  # not published again
    assert sorted(p.name for p in cache.joinpath(".outputs").rglob("*")) == staged


def test_two_shards_publishing_to_one_folder_in_the_store_keep_each_others_records(
    store: tuple[str, Any], videos: Path, tmp_path: Path
) -> None:
    url, fs = store
    out = "s3://out/sh/"
    with holding_proxy(url, "/a.mp4-", 1) as (proxy, held, _, release):  # a frame of a
        cmd = [
            sys.executable,
            "-c",
            SAMPLE,
            proxy,
            str(videos / "a.mp4"),
            str(tmp_path / "c0"),
            out,
        ]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        while not held.wait(0.2):  # the first shard has read the store's state
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        other = sample([videos / "b.mp4"], out, _cfg(url), workers=0, cache_dir=tmp_path / "c1")
        assert other.done == 2  # published meanwhile
        release.set()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _stored(fs, "out/sh", tmp_path / "s") == {"a.mp4": 3, "b.mp4": 2}


def test_a_parquet_folder_in_the_store_resumes_without_its_format_named(
    store: tuple[str, Any], videos: Path, tmp_path: Path
) -> None:
    url, fs = store
    first = sample(
        [videos], "s3://out/pq/", _cfg(url), format="parquet", workers=0, cache_dir=tmp_path / "a"
    )
    assert first.done == 5 and first.output == "s3://out/pq/manifest.parquet"
    again = sample([videos], "s3://out/pq/", _cfg(url), workers=0, cache_dir=tmp_path / "b")
    assert (again.done, again.skipped) == (0, 5)
    assert again.output == "s3://out/pq/manifest.parquet"
    fs.invalidate_cache()
    assert not fs.exists("out/pq/manifest.jsonl")


def test_an_output_the_store_cannot_take_is_refused_before_any_work(
    store: tuple[str, Any], videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = store
    opened: list[str] = []
    real = framepipe.read_clips.open_source
    monkeypatch.setattr(
        framepipe.read_clips, "open_source", lambda p, *a, **k: opened.append(p) or real(p, *a, **k)
    )
    with pytest.raises(OutputError, match=r"^s3://nobucket/s/manifest.jsonl: cannot write the "):
        sample([videos], "s3://nobucket/s/", _cfg(url), workers=0, cache_dir=tmp_path)
    pipe = Pipeline(
        generator=EchoGenerator(),  # type: ignore[arg-type]
        sample=_cfg(url),
        workers=0,
        frames_dir="s3://nobucket/f",
    )
    with pytest.raises(OutputError, match=r"^s3://nobucket/f/: cannot write the frames folder"):
        pipe.run([videos], tmp_path / "r.jsonl")
    with pytest.raises(
        ConfigError, match=r"^http://127.0.0.1:9/o/manifest.jsonl: http:// cannot be"
    ):
        sample([videos], "http://127.0.0.1:9/o/", _cfg(url), workers=0)
    assert opened == [] and not (tmp_path / "r.jsonl").exists()


def test_an_output_whose_store_has_no_package_here_exits_2_naming_the_extra(
    videos: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from framepipe.cli import cli

    pytest.importorskip("fsspec")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    r = CliRunner().invoke(cli, ["sample", str(videos), "-o", "gs://b/out/"])
    assert r.exit_code == 2 and "gs:// outputs" in r.output and "framepipe[gcs]" in r.output


def test_a_report_of_outputs_in_the_store(
    store: tuple[str, Any], videos: Path, tmp_path: Path
) -> None:
    url, fs = store
    assert sample([videos], "s3://out/rep/", _cfg(url), workers=1, cache_dir=tmp_path / "c").ok
    fs.invalidate_cache()
    fs.get_file("out/rep/manifest.jsonl", str(tmp_path / "m.jsonl"))
    recs = list(read_records(tmp_path / "m.jsonl"))
    html_path = tmp_path / "site" / "r.html"
    options = {"endpoint_url": url, **FAST}
    write_report(["s3://out/rep/", "s3://out/rep/manifest.jsonl"], html_path,
                 storage_options=options)  # fmt: skip
    raw = html_path.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]*)"', raw)
    assert raw.count('<section class="card') == 2 * len(recs) == 10
    assert len(srcs) == 2 * sum(len(r["frames"]) for r in recs)
    assert all(s.startswith("data:image/jpeg;base64,") for s in srcs)  # from the store
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["r.html"]  # nothing left
    with pytest.raises(OutputError, match=r"s3://out/nope\.jsonl"):
        write_report("s3://out/nope.jsonl", tmp_path / "n.html", storage_options=options)
