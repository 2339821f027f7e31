"""Remote inputs on S3, against an S3-compatible server process on 127.0.0.1 (moto's
server mode): staged before decoding, fingerprinted by URI + size + ETag, the record names
the URI; a missing object and a dead server are one failed record each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner
from remote_servers import free_port, moto_s3_server, s3, s3_credentials  # noqa: F401 - fixtures

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.errors import StopRunError
from framepipe.inputs.remote import cache_path, remote_stat
from framepipe.output import read_records
from framepipe.runs.sample import MANIFEST, sample

pytest.importorskip("s3fs")
pytest.importorskip("moto")

FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}


@pytest.fixture(scope="module")
def bucket(s3: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:  # noqa: F811
    import s3fs

    d = tmp_path_factory.mktemp("s3src")
    engine_plugins.make_video(d / "a.mp4", 30, seed=7)
    engine_plugins.make_video(d / "b.mp4", 45, seed=8)
    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("media")
    fs.put_file(str(d / "a.mp4"), "media/v/a.mp4")
    fs.put_file(str(d / "b.mp4"), "media/b.mp4")
    return s3, d


def _cfg(endpoint: str, **kw: Any) -> SampleConfig:
    return SampleConfig(n=2, storage_options={"endpoint_url": endpoint, **FAST, **kw})


def test_an_s3_input_is_staged_and_named_by_its_uri(
    bucket: tuple[str, Path], tmp_path: Path
) -> None:
    url, src = bucket
    uri = "s3://media/v/a.mp4"
    fp = remote_stat(uri, {"endpoint_url": url}).fingerprint()
    assert fp["uri"] == uri and fp["size"] == (src / "a.mp4").stat().st_size and fp["etag"]
    cache = tmp_path / "cache"
    s = sample([uri], tmp_path / "out", _cfg(url), cache_dir=cache, workers=1)
    assert (s.done, s.failed) == (1, [])
    (rec,) = read_records(tmp_path / "out" / MANIFEST)
    assert rec["source"] == uri and rec["status"] == "ok"
    assert cache_path(uri, cache).read_bytes() == (src / "a.mp4").read_bytes()
    local = sample([src / "a.mp4"], tmp_path / "local", SampleConfig(n=2), workers=0)
    (lrec,) = read_records(tmp_path / "local" / MANIFEST)
    assert local.done == 1 and lrec["indices"] == rec["indices"]
    # a re-run: the clip is done (same URI, size and ETag)
    again = sample([uri], tmp_path / "out", _cfg(url), cache_dir=cache, workers=0)
    assert (again.done, again.skipped) == (0, 1)


def test_an_image_object_without_an_image_extension_is_a_one_view_scene(
    bucket: tuple[str, Path], tmp_path: Path
) -> None:
    """A content-addressed object (``s3://media/blobs/3f9a0c``) holding a PNG: told by the
    staged copy's first bytes, as over HTTP, not a "video" that fails."""
    import s3fs
    from PIL import Image

    url, src = bucket
    Image.new("RGB", (64, 48), (30, 30, 200)).save(src / "blob.png")
    s3fs.S3FileSystem(endpoint_url=url, skip_instance_cache=True).put_file(
        str(src / "blob.png"), "media/blobs/3f9a0c"
    )
    uri = "s3://media/blobs/3f9a0c"
    s = sample([uri], tmp_path / "out", _cfg(url), cache_dir=tmp_path / "cache", workers=1)
    assert (s.done, s.failed) == (1, [])
    (rec,) = read_records(tmp_path / "out" / MANIFEST)
    assert (rec["source"], rec["kind"], rec["indices"][0]) == (uri, "multiview", 0)


def test_missing_object_and_dead_server_are_one_failed_record_each(
    bucket: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = bucket
    m = tmp_path / "l.jsonl"
    rows = [{"path": "s3://media/b.mp4", "id": "ok"}, {"path": "s3://media/gone.mp4", "id": "gone"}]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    s = sample([], tmp_path / "out", _cfg(url), inputs_from=m, cache_dir=tmp_path / "c", workers=1)
    assert s.done == 1 and s.failed == [
        ("s3://media/gone.mp4", "s3://media/gone.mp4: no such remote object")
    ]
    dead = f"http://127.0.0.1:{free_port()}"
    s = sample(["s3://media/b.mp4"], tmp_path / "dead", _cfg(dead), cache_dir=tmp_path / "c2")
    assert s.done == 0 and len(s.failed) == 1
    src, err = s.failed[0]
    assert src == "s3://media/b.mp4" and err.startswith("s3://media/b.mp4: cannot read the remote")
    assert "\n" not in err


def test_the_cli_takes_the_endpoint_as_a_storage_option(
    bucket: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = bucket
    out = tmp_path / "out"
    args = ["sample", "s3://media/b.mp4", "-n", "2", "-o", str(out), "--workers", "0"]
    args += ["--storage-option", f"endpoint_url={url}", "--cache-dir", str(tmp_path / "c")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    (rec,) = read_records(out / MANIFEST)
    assert rec["source"] == "s3://media/b.mp4" and rec["status"] == "ok"


def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata to ask


@pytest.mark.parametrize("workers", [0, 1])
def test_missing_credentials_stop_the_run_with_one_line_keeping_what_was_written(
    workers: int, bucket: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, src = bucket
    _no_credentials(monkeypatch, tmp_path)
    m = tmp_path / "l.txt"
    rows = [str(src / "a.mp4"), "s3://media/b.mp4", "s3://media/v/a.mp4"]
    m.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    args = ["sample", "--inputs-from", str(m), "-n", "2", "-o", str(out)]
    args += ["--workers", str(workers), "--cache-dir", str(tmp_path / "c")]
    args += [
        "--storage-option",
        f"endpoint_url={url}",
        "--storage-option",
        "skip_instance_cache=true",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    (line,) = [x for x in res.output.splitlines() if "credentials" in x]
    assert "s3://media/b.mp4" in line and "Unable to locate credentials" in line
    assert "every s3:// input would fail the same way" in line
    recs = read_records(out / MANIFEST)  # the local input's record, no failed one per row
    assert [(r["source"], r["status"]) for r in recs] == [(str(src / "a.mp4"), "ok")]


def test_credentials_the_store_refuses_stop_the_run_with_one_line(
    bucket: tuple[str, Path], tmp_path: Path
) -> None:
    _, src = bucket
    m = tmp_path / "l.txt"
    rows = [str(src / "a.mp4"), "s3://media/b.mp4", "s3://media/v/a.mp4"]
    m.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    with moto_s3_server(auth=True) as url:  # it knows no access key: the test's is unknown
        cfg = _cfg(url, skip_instance_cache=True)
        with pytest.raises(StopRunError) as err:
            sample([], out, cfg, inputs_from=m, cache_dir=tmp_path / "c", workers=0)
    msg = str(err.value)
    assert msg.startswith("s3://media/b.mp4: the credentials are refused (InvalidAccessKeyId: ")
    assert "every s3:// input would fail the same way" in msg and "\n" not in msg
    recs = read_records(out / MANIFEST)  # the local input's record, no failed one per row
    assert [(r["source"], r["status"]) for r in recs] == [(str(src / "a.mp4"), "ok")]
