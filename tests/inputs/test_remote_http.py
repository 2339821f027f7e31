"""Remote inputs over HTTP against a real server on 127.0.0.1: staged to the cache before
decoding (by the decode stage), reused while size and ETag match, the record names the URI;
a missing object and a dead server are one failed record each; a scheme without its fsspec
extra is a one-line error before any work."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import engine_plugins
import pytest
from click.testing import CliRunner
from remote_servers import Fault, Served, free_port, http_server, served_videos

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.errors import MissingDependencyError
from framepipe.inputs import collect_inputs
from framepipe.inputs.remote import cache_path, remote_stat
from framepipe.output import read_records
from framepipe.runs.sample import MANIFEST, sample

CFG = SampleConfig(n=2)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    with served_videos(tmp_path / "www") as served:
        yield served


def test_an_http_input_is_staged_and_named_by_its_uri(served: Served, tmp_path: Path) -> None:
    root, url, gets = served
    uri = f"{url}/clips/a.mp4"
    cache = tmp_path / "cache"
    s = sample([uri], tmp_path / "out", CFG, cache_dir=cache, workers=1)
    assert (s.done, s.failed) == (1, [])
    (rec,) = read_records(tmp_path / "out" / MANIFEST)
    assert rec["source"] == uri and rec["status"] == "ok" and len(rec["indices"]) == 2
    staged = cache_path(uri, cache)
    assert staged.is_file() and staged.read_bytes() == (root / "clips" / "a.mp4").read_bytes()
    assert gets["/clips/a.mp4"] == 1
    assert not [p for p in staged.parent.iterdir() if p.name.endswith(".part")]
    # the same object: the cached copy is used (no second download), the clip is done
    again = sample([uri], tmp_path / "out", CFG, cache_dir=cache, workers=0)
    assert (again.done, again.skipped) == (0, 1)
    fresh = sample([uri], tmp_path / "out2", CFG, cache_dir=cache, workers=0)
    assert fresh.done == 1 and gets["/clips/a.mp4"] == 1
    # frames equal those of the local file
    local = sample([root / "clips" / "a.mp4"], tmp_path / "local", CFG, workers=0)
    (lrec,) = read_records(tmp_path / "local" / MANIFEST)
    assert local.done == 1 and lrec["indices"] == rec["indices"]
    assert lrec["timestamps_s"] == rec["timestamps_s"]


def test_the_fingerprint_is_uri_size_and_etag_without_a_download(served: Served) -> None:
    root, url, gets = served
    uri = f"{url}/b.mp4"
    fp = remote_stat(uri).fingerprint()
    size = (root / "b.mp4").stat().st_size
    assert fp["uri"] == uri and fp["size"] == size and fp["etag"]
    assert gets["/b.mp4"] == 0  # a HEAD request only
    before = remote_stat(uri)
    engine_plugins.make_video(root / "b.mp4", 24, seed=5)  # the object changes
    os.utime(root / "b.mp4", ns=(1, 1))
    after = remote_stat(uri)
    assert after.etag != before.etag


def test_a_changed_object_is_downloaded_and_answered_again(served: Served, tmp_path: Path) -> None:
    root, url, gets = served
    uri = f"{url}/b.mp4"
    cache = tmp_path / "cache"
    assert sample([uri], tmp_path / "out", CFG, cache_dir=cache, workers=0).done == 1
    engine_plugins.make_video(root / "b.mp4", 40, seed=6)
    os.utime(root / "b.mp4", ns=(10**18, 10**18))
    s = sample([uri], tmp_path / "out", CFG, cache_dir=cache, workers=0)
    assert (s.done, s.skipped) == (1, 0) and gets["/b.mp4"] == 2
    assert cache_path(uri, cache).read_bytes() == (root / "b.mp4").read_bytes()


def test_missing_object_and_dead_server_are_one_failed_record_each(
    served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    missing = f"{url}/nope.mp4"
    dead = f"http://127.0.0.1:{free_port()}/a.mp4"
    good = f"{url}/b.mp4"
    m = tmp_path / "list.jsonl"
    rows = [{"path": missing, "id": "m"}, {"path": dead, "id": "d"}, {"path": good, "id": "g"}]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    s = sample([], tmp_path / "out", CFG, inputs_from=m, cache_dir=tmp_path / "c", workers=1)
    assert s.done == 1 and len(s.failed) == 2
    recs = {r["id"]: r for r in read_records(tmp_path / "out" / MANIFEST)}
    assert recs["g"]["status"] == "ok" and recs["g"]["source"] == good
    assert (
        recs["m"]["source"] == missing and recs["m"]["error"] == f"{missing}: no such remote object"
    )
    assert recs["d"]["source"] == dead and recs["d"]["error"].startswith(
        f"{dead}: cannot read the remote object"
    )
    for r in (recs["m"], recs["d"]):
        assert r["status"] == "failed" and "\n" not in r["error"] and r["key"]
        assert r["error"].count(r["source"]) == 1


def test_a_scheme_without_its_extra_is_one_error_before_any_work(tmp_path: Path) -> None:
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    with pytest.raises(MissingDependencyError, match=r"pip install 'framepipe\[gcs\]'"):
        collect_inputs(["gs://bucket/a.mp4"])
    m = tmp_path / "l.txt"
    m.write_text("gs://bucket/a.mp4\n", encoding="utf-8")
    with pytest.raises(MissingDependencyError, match=r"gcsfs is not installed"):
        collect_inputs([], inputs_from=m)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sample", "gs://bucket/a.mp4", "-o", str(out)])
    assert res.exit_code != 0 and "framepipe[gcs]" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (out / MANIFEST).exists()


def test_a_later_row_without_its_extra_is_a_failed_record(served: Served, tmp_path: Path) -> None:
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    _, url, _ = served
    m = tmp_path / "l.txt"
    m.write_text(f"{url}/b.mp4\ngs://bucket/a.mp4\n", encoding="utf-8")
    s = sample([], tmp_path / "out", CFG, inputs_from=m, cache_dir=tmp_path / "c", workers=0)
    assert s.done == 1 and len(s.failed) == 1
    src, err = s.failed[0]
    assert src == "gs://bucket/a.mp4" and "pip install 'framepipe[gcs]'" in err


def test_rows_with_an_unknown_scheme_are_failed_records_naming_their_own_uri(
    served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    first, later = "foo://bucket/x.mp4", "foo://other/y.mp4"
    for name, rows in (
        ("first.txt", [first, f"{url}/b.mp4", later]),
        ("later.txt", [f"{url}/b.mp4", first, later]),
    ):
        m = tmp_path / name
        m.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
        out = tmp_path / f"out-{name}"
        args = ["sample", "--inputs-from", str(m), "-n", "2", "-o", str(out)]
        res = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "c")])
        # a typo in a row is that row's failure, wherever the row is: the run goes on
        assert res.exit_code == 1, res.output
        recs = {r["source"]: r for r in read_records(out / MANIFEST)}
        assert recs[f"{url}/b.mp4"]["status"] == "ok"
        for uri in (first, later):
            assert recs[uri]["status"] == "failed"
            assert recs[uri]["error"] == f"{uri}: unknown URI scheme 'foo'"


def test_the_cli_reads_a_manifest_of_uris(served: Served, tmp_path: Path) -> None:
    _, url, _ = served
    m = tmp_path / "l.csv"
    m.write_text(f"path,id\n{url}/b.mp4,x\n{url}/clips/a.mp4,y\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["sample", "--inputs-from", str(m), "-n", "2", "-o", str(out)]
    res = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    recs = sorted(read_records(out / MANIFEST), key=lambda r: r["id"])
    assert [(r["id"], r["source"]) for r in recs] == [
        ("x", f"{url}/b.mp4"),
        ("y", f"{url}/clips/a.mp4"),
    ]


def test_a_server_back_up_replaces_the_failed_record(tmp_path: Path) -> None:
    root = tmp_path / "www"
    engine_plugins.make_video(root / "a.mp4", 20, seed=9)
    port = free_port()
    uri = f"http://127.0.0.1:{port}/a.mp4"
    out, cache = tmp_path / "out", tmp_path / "cache"
    down = sample([uri], out, CFG, cache_dir=cache, workers=0)
    assert down.done == 0 and len(down.failed) == 1
    (rec,) = read_records(out / MANIFEST)
    assert rec["status"] == "failed" and rec["clip"] is None
    with http_server(root, port):
        up = sample([uri], out, CFG, cache_dir=cache, workers=0)
    assert (up.done, up.failed) == (1, [])
    # exactly one record for the input: its clip; the failure while it was down is gone
    (rec,) = read_records(out / MANIFEST)
    assert rec["status"] == "ok" and rec["source"] == uri


def test_a_signed_urls_token_is_in_no_log_line_and_no_frame_folder(tmp_path: Path) -> None:
    faults = {"/b.mp4": [Fault(status=503)]}  # one retry, logged at -v
    with served_videos(tmp_path / "www", faults) as (_, url, _):
        good = f"{url}/b.mp4?token=SECRET1&X-Amz-Signature=SECRET2"
        missing = f"{url}/nope.mp4?token=SECRET3"
        args = ["-v", "sample", good, missing, "-o", str(tmp_path / "out"), "-n", "2"]
        res = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 1, res.output
    assert f"error: {url}/nope.mp4?token=***: no such remote object" in res.output
    assert "try 2 of 4" in res.output and "SECRET" not in res.output
    recs = {r["status"]: r for r in read_records(tmp_path / "out" / MANIFEST)}
    assert recs["ok"]["source"] == good  # the records name the input as it was given
    assert "SECRET" not in json.dumps(recs["ok"]["frames"]) + recs["ok"]["contact_sheet"]
    assert not [p for p in (tmp_path / "out").rglob("*") if "SECRET" in p.name]


def test_an_image_url_without_an_image_extension_is_a_one_view_scene(
    served: Served, tmp_path: Path
) -> None:
    """Told by the downloaded copy's first bytes, as a local file named so is: not a
    "video" that fails; a URL without an extension holding a video stays a video, and
    ``--kind video`` still reads the image as a video (and says it is an image)."""
    from PIL import Image

    root, url, _ = served
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "photo", format="JPEG")
    Image.new("RGB", (64, 48), (30, 200, 30)).save(root / "3f9a0c", format="PNG")
    (root / "vid").write_bytes((root / "b.mp4").read_bytes())
    uris = [f"{url}/photo", f"{url}/3f9a0c", f"{url}/vid"]
    cache = tmp_path / "cache"
    s = sample(uris, tmp_path / "out", CFG, cache_dir=cache, workers=1)
    assert (s.done, s.failed) == (3, [])
    recs = {r["source"]: r for r in read_records(tmp_path / "out" / MANIFEST)}
    assert [(recs[u]["kind"], recs[u]["status"]) for u in uris] == [
        ("multiview", "ok"),
        ("multiview", "ok"),
        ("video", "ok"),
    ]
    assert {v["name"] for v in recs[uris[0]]["views"]} == {"photo"}
    again = sample(uris, tmp_path / "out", CFG, cache_dir=cache, workers=0)
    assert (again.done, again.skipped) == (0, 3)
    env = {"FRAMEPIPE_CACHE_DIR": str(cache)}
    result = CliRunner().invoke(cli, ["info", uris[0]], env=env)
    assert result.exit_code == 0, result.output
    assert "multiview" in result.output
    forced = SampleConfig(n=2, kind="video")
    f = sample(uris[:1], tmp_path / "forced", forced, cache_dir=cache, workers=0)
    assert f.done == 0 and len(f.failed) == 1
    (rec,) = read_records(tmp_path / "forced" / MANIFEST)
    assert (rec["kind"], rec["error"]) == ("video", f"{uris[0]}: an image, not a video")


def test_an_image_url_without_an_image_extension_takes_the_image_source_options(
    served: Served, tmp_path: Path
) -> None:
    """Its kind is known once it is downloaded, so the run's settings are not refused as
    though it were a video (``--source-opt max_side=32``): the view is read at that size."""
    from PIL import Image

    root, url, _ = served
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "photo", format="JPEG")
    cfg = SampleConfig(n=1, source_options={"max_side": 32})
    s = sample([f"{url}/photo"], tmp_path / "out", cfg, cache_dir=tmp_path / "c", workers=0)
    assert (s.done, s.failed) == (1, [])
    (rec,) = read_records(tmp_path / "out" / MANIFEST)
    assert rec["kind"] == "multiview"
    env = {"FRAMEPIPE_CACHE_DIR": str(tmp_path / "c")}
    result = CliRunner().invoke(
        cli, ["info", "--json", f"{url}/photo", "--source-opt", "max_side=32"], env=env
    )
    assert result.exit_code == 0, result.output
    assert (json.loads(result.output)[0]["width"], json.loads(result.output)[0]["height"]) == (
        32,
        24,
    )
    # its keys hold the image options: another max_side reads it again
    other = SampleConfig(n=1, source_options={"max_side": 16})
    again = sample([f"{url}/photo"], tmp_path / "out", other, cache_dir=tmp_path / "c", workers=0)
    assert (again.done, again.skipped) == (1, 0)
