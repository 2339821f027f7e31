"""``merge`` of outputs in an object store, against an S3-compatible server process on
127.0.0.1 (moto's server mode): shard folders, ``sample`` folders and ``caption`` records
files in the store merge as the same files downloaded would (one record per clip, the latest
wins, ledgers merged, frame paths pointing at the store), and what cannot be read there is
one line naming the URI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner
from generator_doubles import EchoGenerator
from remote_servers import s3, s3_credentials  # noqa: F401 - fixtures

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.output import merge, read_records
from framepipe.output.ledger import ledger_of
from framepipe.runs.caption import Pipeline
from framepipe.runs.sample import sample

pytest.importorskip("s3fs")
pytest.importorskip("moto")

FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}


@pytest.fixture(scope="module")
def store(s3: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:  # noqa: F811
    """The endpoint and a client of the server, with a bucket ``out`` holding (in this write
    order, a second apart: the store's times have whole seconds) a ``sample`` folder of
    a.mp4 and b.mp4, a second one of a.mp4 alone (its records replace the first's) and a
    ``caption`` records file of b.mp4 with its frames in the store."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("out")
    videos = tmp_path_factory.mktemp("videos")
    engine_plugins.make_video(videos / "a.mp4", 30, seed=1)  # three clips
    engine_plugins.make_video(videos / "b.mp4", 20, seed=2)  # two
    cfg = SampleConfig(n=2, clip_seconds=0.34, storage_options={"endpoint_url": s3, **FAST})
    cache = tmp_path_factory.mktemp("cache")
    assert sample([videos], "s3://out/m/s/", cfg, workers=0, cache_dir=cache).done == 5
    time.sleep(1.1)
    assert sample([videos / "a.mp4"], "s3://out/m/t/", cfg, workers=0, cache_dir=cache).done == 3
    time.sleep(1.1)
    pipe = Pipeline(
        generator=EchoGenerator(),  # type: ignore[arg-type]
        sample=cfg,
        workers=0,
        frames_dir="s3://out/m/frames",
    )
    assert pipe.run([videos / "b.mp4"], "s3://out/m/c.jsonl", cache_dir=cache).done == 2
    fs.pipe_file("out/m/notes/readme.txt", b"not records")
    fs.invalidate_cache()
    return s3, fs


def _merge(url: str, tmp: Path, *args: str) -> Any:
    opts = ["--storage-option", f"endpoint_url={url}", "--cache-dir", str(tmp / "cache")]
    return CliRunner().invoke(cli, ["merge", *args, *opts])


def _pointing_at_the_store(rec: dict[str, Any]) -> dict[str, Any]:
    """A record of the downloaded files' merge (frames under ``dl/``) as the store's."""
    out = {k: v for k, v in rec.items()}
    out["frames"] = [f.replace("dl/", "s3://out/m/", 1) for f in rec["frames"] or []]
    if rec.get("contact_sheet"):
        out["contact_sheet"] = rec["contact_sheet"].replace("dl/", "s3://out/m/", 1)
    return out


def test_merge_reads_outputs_in_the_store_as_the_same_files_downloaded(
    store: tuple[str, Any], tmp_path: Path
) -> None:
    url, fs = store
    inputs = ["s3://out/m/s/", "s3://out/m/t", "s3://out/m/c.jsonl"]
    res = _merge(url, tmp_path, *inputs, "-o", str(tmp_path / "all.jsonl"))
    assert res.exit_code == 0, res.output
    assert "7 record(s) from 3 file(s)" in res.output and "(3 superseded)" in res.output
    dl = tmp_path / "dl"  # the same files downloaded, in the order the store wrote them
    for name in ("s", "t"):
        fs.get(f"out/m/{name}/", str(dl / name), recursive=True)
    for name in ("c.jsonl", ".c.jsonl.inputs"):
        fs.get_file(f"out/m/{name}", str(dl / name))
    local = merge([dl / "s", dl / "t", dl / "c.jsonl"], tmp_path / "ref.jsonl")
    assert local.records == 7 and local.dropped == 3
    got = list(read_records(tmp_path / "all.jsonl"))
    assert got == [_pointing_at_the_store(r) for r in read_records(tmp_path / "ref.jsonl")]
    assert len({r["key"] for r in got}) == len(got)  # one record per clip
    for rec in got:  # the frames are the store's
        assert all(fs.exists(f.removeprefix("s3://")) for f in rec["frames"])
    assert ledger_of(tmp_path / "all.jsonl").read_text() == (
        ledger_of(tmp_path / "ref.jsonl").read_text()
    )


def test_merge_reads_the_store_as_it_is_now(store: tuple[str, Any], tmp_path: Path) -> None:
    url, fs = store
    for part, name in (("0", "s"), ("1", "t")):  # a folder of part files: a.mp4 and b.mp4; a.mp4
        fs.copy(f"out/m/{name}/manifest.jsonl", f"out/m/p/part-{part}.jsonl")
        fs.copy(f"out/m/{name}/.manifest.jsonl.inputs", f"out/m/p/.part-{part}.jsonl.inputs")
    out = str(tmp_path / "all.jsonl")
    assert _merge(url, tmp_path, "s3://out/m/p/", "-o", out).exit_code == 0
    assert len(list(read_records(out))) == 5
    fs.rm("out/m/p/part-0.jsonl")  # the copy staged by the first merge is no longer the store's
    fs.invalidate_cache()
    res = _merge(url, tmp_path, "s3://out/m/p/", "-o", out)
    assert res.exit_code == 0, res.output
    assert {Path(r["source"]).name for r in read_records(out)} == {"a.mp4"}
    assert not list((tmp_path / "cache").rglob("part-0.jsonl*"))


def test_merge_reads_the_shard_files_a_pattern_in_the_store_matches(
    store: tuple[str, Any], tmp_path: Path
) -> None:
    url, fs = store
    for part, name in (("0", "t/manifest.jsonl"), ("1", "c.jsonl")):  # 3 + 2 clips
        head, _, file = name.rpartition("/")
        ledger = f"{head}/.{file}.inputs" if head else f".{file}.inputs"
        fs.copy(f"out/m/{name}", f"out/m/shards/shard-{part}.jsonl")
        fs.copy(f"out/m/{ledger}", f"out/m/shards/.shard-{part}.jsonl.inputs")
    fs.invalidate_cache()
    out, each = tmp_path / "all.jsonl", tmp_path / "each.jsonl"
    res = _merge(url, tmp_path, "s3://out/m/shards/shard-*.jsonl", "-o", str(out))
    assert res.exit_code == 0, res.output
    shards = [f"s3://out/m/shards/shard-{k}.jsonl" for k in (0, 1)]
    assert _merge(url, tmp_path, *shards, "-o", str(each)).exit_code == 0
    assert list(read_records(out)) == list(read_records(each)) and len(list(read_records(out))) == 5
    res = _merge(url, tmp_path, "s3://out/m/shards/zz-*.jsonl", "-o", str(out))
    assert res.exit_code == 1 and res.output.startswith("Error: s3://out/m/shards/zz-*.jsonl: ")


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("s3://nobucket/results/", "no such bucket"),
        ("s3://out/m/nothing.jsonl", "no such remote object or folder"),
        ("s3://out/m/notes/", "no records file in the folder"),
        ("s3://out/m/s/", "no usable credentials"),
    ],
)
def test_merge_of_what_the_store_does_not_hold_is_one_line_naming_the_uri(
    store: tuple[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
    why: str,
) -> None:
    url, _ = store
    opts: list[str] = []
    if why == "no usable credentials":
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(k)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        opts = ["--storage-option", "skip_instance_cache=true"]
    out = tmp_path / "m.jsonl"
    res = _merge(url, tmp_path, uri, "-o", str(out), *opts)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and res.output.count("\n") == 1
    assert res.output.startswith(f"Error: {uri}: ") and why in res.output
    assert not out.exists()
