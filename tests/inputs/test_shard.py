"""``--shard I/N``: a stable split of the inputs (by a digest of their identity, not their
order); the N shards' outputs merged equal one run's output (timings aside). Also: a
manifest row's questions replace the run's for that input in caption."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner
from generator_doubles import EchoGenerator

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.errors import ConfigError
from framepipe.inputs import collect_inputs
from framepipe.inputs.shard import Shard, parse_shard, shard_of
from framepipe.output import merge, read_records
from framepipe.runs.caption import Pipeline


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shard_videos")
    for k in range(7):
        engine_plugins.make_video(d / f"v{k}.mp4", 12 + 3 * k, seed=10 + k)
    (d / "broken.mp4").write_bytes(b"not a video")
    return d


def _caption(paths: Any, output: Path | None, **kw: Any) -> Any:
    run_kw = {k: kw.pop(k) for k in ("shard", "inputs_from") if k in kw}
    pipe = Pipeline(
        generator=EchoGenerator(),  # type: ignore[arg-type]
        sample=SampleConfig(n=2, clip_seconds=0.4),
        questions=["What?"],
        workers=kw.pop("workers", 0),
        **kw,
    )
    return pipe.run(paths, output, **run_kw)


def _comparable(recs: Any) -> list[dict[str, Any]]:
    out = []
    for r in recs:
        r = dict(r)
        r.pop("timings_s", None)
        out.append(r)
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True))


def test_parse_shard() -> None:
    assert parse_shard("1/4") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    assert parse_shard(None) is None and parse_shard((0, 2)) == Shard(0, 2)
    for bad, what in (
        ("4/4", "not in 0..3"),
        ("x", "expected I/N"),
        ("1/0", "must be >= 1"),
        ("-1/3", "not in 0..2"),
        ("1/2/3", "expected I/N"),
    ):
        with pytest.raises(ConfigError, match=what):
            parse_shard(bad)


def test_shards_split_the_inputs_stably_and_independently_of_order() -> None:
    items = [Input(Path(f"/data/v{k:04d}.mp4"), "video") for k in range(2000)]
    items += [Input(Path("/c/x.mp4"), "video", uri=f"s3://b/{k}.mp4") for k in range(500)]
    shuffled = list(items)
    random.Random(0).shuffle(shuffled)
    n = 4
    parts = [list(collect_inputs(items, shard=f"{i}/{n}")[0]) for i in range(n)]
    again = [list(collect_inputs(shuffled, shard=f"{i}/{n}")[0]) for i in range(n)]
    assert sum(len(p) for p in parts) == len(items)  # every input in exactly one shard
    for p, q in zip(parts, again):
        assert sorted(map(str, p)) == sorted(map(str, q))  # the order does not matter
    assert all(400 < len(p) < 850 for p in parts)  # about a quarter each
    # the shard is the input's: a row's id does not move it
    assert shard_of(Input(Path("/data/v0000.mp4"), "video"), 4) == shard_of(
        Input(Path("/data/v0000.mp4"), "video", id="another id"), 4
    )
    # a digest (sha256 of the identity's JSON), not Python's salted hash(): these are the
    # shards of /data/v0000.mp4 ... v0005.mp4 of 7 in any process on any machine
    assert int("419c3f1d486b52df", 16) % 7 == 4
    assert [shard_of(i, 7) for i in items[:6]] == [4, 2, 6, 2, 1, 1]


def test_merged_shards_equal_one_run(videos: Path, tmp_path: Path) -> None:
    one = _caption([videos], tmp_path / "one.jsonl")
    assert one.done > 7 and len(one.failed) == 1
    n = 3
    parts, counts = [], []
    for i in range(n):
        out = tmp_path / "parts" / f"shard-{i}.jsonl"
        s = _caption([videos], out, shard=f"{i}/{n}", workers=1)
        if out.exists():  # a shard may be empty
            parts.append(out)
        counts.append(s.done + len(s.failed))
    assert sum(counts) == one.done + len(one.failed)  # every clip in exactly one shard
    merge(parts, tmp_path / "merged.jsonl")
    merged = list(read_records(tmp_path / "merged.jsonl"))
    single = list(read_records(tmp_path / "one.jsonl"))
    assert len(merged) == len(single) == one.done + len(one.failed)
    assert _comparable(merged) == _comparable(single)
    # no clip is in two shards
    keys = [r["key"] for p in parts for r in read_records(p)]
    assert len(keys) == len(set(keys))


def test_a_file_listed_in_a_folder_row_and_a_row_of_its_own_is_read_by_one_shard(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = tmp_path / "list.txt"
    (tmp_path / "vids").symlink_to(videos)
    files = sorted(p for p in videos.iterdir() if p.name.startswith("v"))
    # the folder, then each of its files spelled another way (relative, through a link)
    m.write_text(f"{videos}\n" + "".join(f"vids/{p.name}\n" for p in files), encoding="utf-8")
    n = 3
    parts = [list(collect_inputs(inputs_from=m, shard=f"{i}/{n}")[0]) for i in range(n)]
    taken = [str(item.path.resolve()) for part in parts for item in part]
    assert sorted(taken) == sorted(str(p.resolve()) for p in videos.iterdir())  # each once
    assert sum(1 for part in parts if part) > 1  # the folder's files are split too
    # a file named relative, absolute or through a link is in one shard
    monkeypatch.chdir(tmp_path)
    for f in files:
        spellings = [f, Path("vids") / f.name, tmp_path / "." / "vids" / f.name]
        assert len({shard_of(Input(p, "video"), n) for p in spellings}) == 1


def test_the_cli_takes_a_shard(videos: Path, tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}"
        res = CliRunner().invoke(
            cli, ["sample", str(videos), "-n", "2", "-o", str(out), "--shard", f"{i}/2"]
        )
        assert res.exit_code in (0, 1), res.output  # 1: the broken input's shard
        outs.append({r["source"] for r in read_records(out / "manifest.jsonl")})
    assert not outs[0] & outs[1] and len(outs[0] | outs[1]) == 8
    res = CliRunner().invoke(
        cli, ["sample", str(videos), "-o", str(tmp_path / "x"), "--shard", "2/2"]
    )
    assert res.exit_code == 2 and "not in 0..1" in res.output


def test_a_rows_questions_replace_the_runs_for_it(videos: Path, tmp_path: Path) -> None:
    m = tmp_path / "l.jsonl"
    rows = [
        {"path": str(videos / "v0.mp4"), "id": "own", "questions": ["Colour?", "Count?"]},
        {"path": str(videos / "v1.mp4"), "id": "one", "questions": "Where?"},
        {"path": str(videos / "v2.mp4"), "id": "run"},
    ]
    m.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    s = _caption([], tmp_path / "out.jsonl", inputs_from=m)
    assert not s.failed
    recs = list(read_records(tmp_path / "out.jsonl"))
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_id.setdefault(r["id"], []).append(r)
    assert set(by_id) == {"own", "one", "run"}
    for ident, qs in (("own", ["Colour?", "Count?"]), ("one", ["Where?"]), ("run", ["What?"])):
        for r in by_id[ident]:
            assert r["questions"] == qs
            assert [a.split(" => ")[0] for a in r["answers"]] == qs
    # the questions join the resume key: the same clip asked other questions is another record
    own = {r["clip"]["index"]: r["key"] for r in by_id["own"]}
    plain = _caption([videos / "v0.mp4"], tmp_path / "plain.jsonl")
    assert plain.done == len(own)
    assert not set(own.values()) & {r["key"] for r in read_records(tmp_path / "plain.jsonl")}
