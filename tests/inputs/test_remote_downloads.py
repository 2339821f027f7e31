"""What the cache keeps of remote inputs, against a real HTTP server on 127.0.0.1: with
``keep_downloads`` (the default) each object stays for later runs; without it every use of an
object has a copy of its own, removed once the input's clips are read, and the records are
those of a run that keeps them. Records never name the cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from remote_servers import Served, served_videos

import framepipe.inputs.remote as remote
from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.inputs import remote_input
from framepipe.inputs.remote import cache_path
from framepipe.output import read_records
from framepipe.read_clips import named_by_uri
from framepipe.runs.sample import MANIFEST, sample

KEEP = SampleConfig(n=2)
NO_KEEP = SampleConfig(n=2, keep_downloads=False)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    with served_videos(tmp_path / "www") as served:
        yield served


def _files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def _records(out: Path) -> list[dict[str, Any]]:
    recs = [{k: v for k, v in r.items() if k != "timings_s"} for r in read_records(out / MANIFEST)]
    return sorted(recs, key=lambda r: str(r["key"]))


def test_without_keep_downloads_nothing_stays_in_the_cache(served: Served, tmp_path: Path) -> None:
    _, url, gets = served
    a, b = f"{url}/clips/a.mp4", f"{url}/b.mp4"
    rows = [
        {"path": a, "id": "a-head", "end_s": 0.5},
        {"path": a, "id": "a-tail", "start_s": 0.5},  # the same object, used twice at once
        {"path": b, "id": "b"},
    ]
    m = tmp_path / "rows.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["sample", "--inputs-from", str(m), "-n", "2", "--workers", "2"]
    gone_cache, gone = tmp_path / "c-gone", tmp_path / "gone"
    res = CliRunner().invoke(
        cli, [*args, "-o", str(gone), "--cache-dir", str(gone_cache), "--no-keep-downloads"]
    )
    assert res.exit_code == 0, res.output
    assert _files(gone_cache) == []
    assert (gets["/clips/a.mp4"], gets["/b.mp4"]) == (2, 1)  # one download per use
    kept_cache, kept = tmp_path / "c-kept", tmp_path / "kept"
    res = CliRunner().invoke(cli, [*args, "-o", str(kept), "--cache-dir", str(kept_cache)])
    assert res.exit_code == 0, res.output
    assert _records(gone) == _records(kept) and len(_records(kept)) == 3
    assert {p.name for p in _files(kept_cache) if not p.name.endswith(".json")} == {
        "a.mp4",
        "b.mp4",
    }


def test_a_current_kept_copy_is_used_and_left_in_place(served: Served, tmp_path: Path) -> None:
    _, url, gets = served
    uri, cache = f"{url}/b.mp4", tmp_path / "cache"
    assert sample([uri], tmp_path / "one", KEEP, cache_dir=cache, workers=0).done == 1
    assert gets["/b.mp4"] == 1
    s = sample([uri], tmp_path / "two", NO_KEEP, cache_dir=cache, workers=0)
    assert (s.done, s.failed) == (1, []) and gets["/b.mp4"] == 1
    assert cache_path(uri, cache).is_file()
    assert _records(tmp_path / "one") == _records(tmp_path / "two")


@pytest.mark.parametrize("cfg", [KEEP, NO_KEEP], ids=["keep", "no-keep"])
def test_a_bad_object_is_named_by_its_uri_not_by_its_copy(
    cfg: SampleConfig, served: Served, tmp_path: Path
) -> None:
    _, url, _ = served
    uri = f"{url}/bad.mp4"
    errors = []
    for k in (1, 2):
        cache = tmp_path / f"cache-{k}"
        s = sample([uri], tmp_path / f"out-{k}", cfg, cache_dir=cache, workers=0)
        assert s.done == 0 and len(s.failed) == 1
        (rec,) = read_records(tmp_path / f"out-{k}" / MANIFEST)
        assert rec["status"] == "failed" and str(cache) not in rec["error"]
        assert rec["error"].startswith(f"{uri}: ") and rec["error"].count(uri) == 1
        errors.append(rec["error"])
        if not cfg.keep_downloads:
            assert _files(cache) == []
    assert errors[0] == errors[1] and "not a readable video" in errors[0]


def test_a_failed_download_leaves_nothing_in_the_cache(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url, _ = served
    real = remote.filesystem

    class Broken:
        """The server's filesystem, whose downloads break after the metadata request."""

        def __init__(self, fs: Any) -> None:
            self.fs = fs

        def info(self, path: str) -> Any:
            return self.fs.info(path)

        def get_file(self, *_: Any, **__: Any) -> None:
            raise ConnectionResetError("connection reset by peer")

    def broken(uri: str, options: Any) -> tuple[Any, str]:
        fs, path = real(uri, options)
        return Broken(fs), path

    monkeypatch.setattr(remote, "filesystem", broken)
    uri, cache = f"{url}/b.mp4", tmp_path / "cache"
    s = sample([uri], tmp_path / "out", NO_KEEP, cache_dir=cache, workers=0)
    reset = "cannot read the remote object (ConnectionResetError: connection reset by peer)"
    assert s.done == 0 and s.failed == [(uri, f"{uri}: {reset}")]
    assert _files(cache) == [] and list((cache / remote.IN_USE).iterdir()) == []


def test_an_error_names_the_uri_for_a_copy_and_keeps_a_cache_folder() -> None:
    item = remote_input("http://127.0.0.1:1/v/a.mp4", cache_dir="/c")
    uri = str(item.uri)
    copy = Path("/c") / remote.IN_USE / "0123abcd" / "a.mp4"
    bad = f"{uri}: {copy}: not a readable video"
    assert named_by_uri(bad, item) == f"{uri}: not a readable video"
    assert named_by_uri(f"{uri}: no such file {item.path}", item) == f"{uri}: no such file {uri}"
    folder = f"{uri}: cannot create the cache folder /c/{remote.IN_USE} (Permission denied)"
    assert named_by_uri(folder, item) == folder


def test_a_relative_cache_dir_stays_where_the_run_began_for_a_process_elsewhere(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster's workers run in a folder of their own: a relative ``--cache-dir`` used to
    stage each object under the worker's folder, not the one the run was started in."""
    _, url, _ = served
    monkeypatch.chdir(tmp_path)
    item = remote_input(f"{url}/b.mp4", cache_dir="cache")
    assert item.path.is_absolute() and item.path.is_relative_to(tmp_path / "cache")
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the worker's own folder
    assert sample([item], tmp_path / "out", KEEP, workers=0).done == 1
    assert _files(tmp_path / "cache") and not _files(elsewhere)


def test_a_remote_objects_kind_comes_from_its_name_never_from_a_local_path_so_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``https://host/photo`` from a folder holding a scene ``photo/`` was a scene (its name
    was looked up as a local path), from elsewhere one whose first bytes decide: the kind,
    and so the keys, depended on the working directory (a cluster's workers have another)."""
    from PIL import Image

    from framepipe.inputs import possible_kinds

    for name in ("photo", "model.ply", "clip.mp4"):  # a scene, and files of other kinds
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    seen = []
    for cwd in (tmp_path, elsewhere):
        monkeypatch.chdir(cwd)
        items = [remote_input(f"https://host/{n}") for n in ("photo", "model.ply", "clip.mp4")]
        seen.append([(i.kind, len(possible_kinds(i)) > 1) for i in items])
    assert seen[0] == seen[1] == [("video", True), ("render", False), ("video", False)]
