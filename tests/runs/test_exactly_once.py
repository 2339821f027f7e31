"""Exactly one record per clip after any sequence of ``sample`` and ``caption`` runs (issue 11.4),
``--retry-failed/--no-retry-failed``, and the runs' Parquet and part-file outputs (issue 12.5).

``CountingGenerator`` is a TEST DOUBLE with the Generator's methods: it answers every clip
with the number of frames it was given, and counts the clips it answered."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner
from generator_doubles import EchoAnswer

import framepipe.output.store
import framepipe.read_clips
from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.errors import ConfigError, SourceError
from framepipe.output import read_output, read_records
from framepipe.runs.caption import Pipeline
from framepipe.runs.sample import sample


class CountingGenerator:
    """TEST DOUBLE: answers ``"<n> frames"``; ``answered`` counts the clips."""

    def __init__(self) -> None:
        self.answered = 0

    def describe(self) -> dict[str, Any]:
        names = ("revision", "path", "quantize")
        return {"id": "test/count", **dict.fromkeys(names), "dtype": "float32", "device": "cpu",
                "attn": "eager", "random_weights": True}  # fmt: skip

    def answer(self, requests: Sequence[Any]) -> list[EchoAnswer]:
        self.answered += len(requests)
        return [EchoAnswer("p", [f"{len(r.images)} frames"], 0.0, 1, [1]) for r in requests]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return engine_plugins.video_folder(tmp_path_factory.mktemp("once"), [20, 12])


def _caption(paths: list[Path], output: Any, **kw: Any) -> Any:
    gen: Any = CountingGenerator()
    pipe = Pipeline(generator=gen, sample=SampleConfig(n=2), workers=0)
    return pipe.run(paths, output, **kw)


def _by_source(recs: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in recs:
        out.setdefault(Path(r["source"]).name, []).append(r["status"])
    return out


def test_caption_twice_with_a_failing_input_keeps_one_record_per_clip(
    inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    files = sorted(inputs.iterdir())
    _caption(files, out)
    s = _caption(files, out)
    assert (s.done, s.skipped, len(s.failed)) == (0, 2, 1)  # the failed input was retried
    recs = list(read_records(out))
    assert len(recs) == 3  # was 4: the retried failure appended a second record
    assert _by_source(recs) == {"a.mp4": ["ok"], "b.mp4": ["ok"], "broken.mp4": ["failed"]}
    # --no-retry-failed: the failed input counts as done, its record is kept
    s = _caption(files, out, retry_failed=False)
    assert (s.done, s.skipped, len(s.failed)) == (0, 3, 0)
    assert len(list(read_records(out))) == 3
    # the next tool reads it: pandas and datasets
    import datasets
    import pandas as pd

    assert sorted(pd.read_json(out, lines=True)["status"]) == ["failed", "ok", "ok"]
    ds = datasets.load_dataset(
        "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert sorted(ds["status"]) == ["failed", "ok", "ok"] and ds["answers"].count(None) == 1


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_sample_twice_with_a_failing_input(inputs: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "s"
    for _ in range(2):
        sample([inputs], out, SampleConfig(n=2), format=fmt, workers=0, sheets=False)
    manifest = out / f"manifest.{fmt}"
    recs = list(read_output(manifest))
    assert _by_source(recs) == {"a.mp4": ["ok"], "b.mp4": ["ok"], "broken.mp4": ["failed"]}
    if fmt == "parquet":
        import pandas as pd

        df = pd.read_parquet(manifest)
        assert len(df) == 3 and set(df["status"]) == {"ok", "failed"}
        assert not (out / ".manifest.parquet.journal").exists()
        # resume from Parquet: everything done (the default format is the manifest there)
        s = sample([inputs], out, SampleConfig(n=2), workers=0, sheets=False)
        assert (s.done, s.skipped) == (0, 2) and not (out / "manifest.jsonl").exists()


def test_a_sample_folder_keeps_the_format_of_its_manifest(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    sample([inputs / "a.mp4"], out, SampleConfig(n=2), workers=0, sheets=False)
    # another format would start a second manifest (a resume or --overwrite beside the old
    # one, which a plain resume then goes back to): refused before any work
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"manifest.jsonl: this output's manifest is jsonl"):
            sample([inputs / "a.mp4"], out, SampleConfig(n=3), format="parquet",
                   overwrite=overwrite, workers=0, sheets=False)  # fmt: skip
    assert sorted(p.name for p in out.glob("manifest.*")) == ["manifest.jsonl"]
    s = sample([inputs / "a.mp4"], out, SampleConfig(n=2), format="jsonl", workers=0)
    assert (s.done, s.skipped) == (0, 1)


def test_a_parquet_sample_stopped_before_its_first_fold_resumes_as_parquet(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s"

    def killed(*a: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # stopped (a kill, a full disk) before the fold

    monkeypatch.setattr(framepipe.output.store, "fold_parquet", killed)
    with pytest.raises(KeyboardInterrupt):
        sample([inputs / "a.mp4"], out, SampleConfig(n=2), format="parquet", workers=0)
    monkeypatch.undo()
    assert not (out / "manifest.parquet").exists() and (out / ".manifest.parquet.journal").exists()
    # the same command without --format: the folder's manifest is the Parquet one
    s = sample([inputs / "a.mp4"], out, SampleConfig(n=2), workers=0, sheets=False)
    assert (s.done, s.skipped) == (0, 1) and not (out / "manifest.jsonl").exists()
    assert len(list(read_output(out / "manifest.parquet"))) == 1
    with pytest.raises(ConfigError, match=r"manifest.parquet: this output's manifest is parquet"):
        sample([inputs / "a.mp4"], out, SampleConfig(n=2), format="jsonl", workers=0)


def test_an_input_that_failed_whole_then_opens_leaves_only_its_clip_records(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.jsonl"
    real_open = framepipe.read_clips.open_source

    def flaky_open(path: Any, *a: Any, **kw: Any) -> Any:
        if Path(path).name == "a.mp4":
            raise SourceError(path, "temporarily unavailable")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(framepipe.read_clips, "open_source", flaky_open)
    files = [inputs / "a.mp4", inputs / "b.mp4"]
    _caption(files, out)
    (failed,) = [r for r in read_records(out) if r["status"] == "failed"]
    assert failed["clip"] is None  # a failure of the whole input: its own key
    monkeypatch.setattr(framepipe.read_clips, "open_source", real_open)
    s = _caption(files, out)
    assert (s.done, s.skipped) == (1, 1)
    recs = list(read_records(out))
    assert _by_source(recs) == {"a.mp4": ["ok"], "b.mp4": ["ok"]}
    (a,) = [r for r in recs if r["source"].endswith("a.mp4")]
    assert a["input_key"] == failed["key"]


def test_an_input_missing_or_not_readable_then_fixed_leaves_only_its_clip_records(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    a, b = src / "a.mp4", src / "b.mp4"  # a: not copied yet; b: a link to nothing yet
    b.symlink_to(src / "b-target.mp4")
    out = tmp_path / "s"
    s = sample([a, b], out, SampleConfig(n=2), workers=0, sheets=False)
    assert (s.done, len(s.failed)) == (0, 2)
    engine_plugins.make_video(a, 8, seed=1)  # the files are there now
    engine_plugins.make_video(src / "b-target.mp4", 8, seed=2)
    s = sample([a, b], out, SampleConfig(n=2), workers=0, sheets=False)
    assert (s.done, s.failed) == (2, [])
    recs = list(read_records(out / "manifest.jsonl"))
    assert _by_source(recs) == {"a.mp4": ["ok"], "b.mp4": ["ok"]}  # the failures went


def _rows(manifest: Path) -> int:
    """How many records the file holds, read as other tools read it."""
    if manifest.suffix == ".jsonl":
        return len(manifest.read_text().splitlines())
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(manifest).metadata.num_rows)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_input_done_then_gone_for_a_run_then_back_unchanged_keeps_only_its_clip_records(
    tmp_path: Path, fmt: str
) -> None:
    src = tmp_path / "in"
    a, b = engine_plugins.make_video(src / "a.mp4", 8, seed=1), src / "b.mp4"
    engine_plugins.make_video(b, 8, seed=2)
    out, away = tmp_path / "s", tmp_path / "away.mp4"
    manifest = out / f"manifest.{fmt}"
    cfg = SampleConfig(n=2, clip_seconds=4 / 30)  # two clips an input

    def run() -> Any:
        return sample([a, b], out, cfg, format=fmt, workers=0, sheets=False)

    s = run()
    assert (s.done, s.failed) == (4, [])
    os.replace(a, away)  # moved away for a run (or a server's brief 404): it fails whole
    s = run()
    assert (s.done, s.skipped, len(s.failed)) == (0, 2, 1)
    # its clips were read and their records stand: a failure of the whole input beside them
    # would be one record more than the input has clips
    assert _by_source(read_output(manifest)) == {"a.mp4": ["ok"] * 2, "b.mp4": ["ok"] * 2}
    assert _rows(manifest) == 4  # the file itself, as pandas or jq read it
    os.replace(away, a)  # back, unchanged: done, skipped unopened
    s = run()
    assert (s.done, s.skipped, s.failed) == (0, 4, [])
    assert _by_source(read_output(manifest)) == {"a.mp4": ["ok"] * 2, "b.mp4": ["ok"] * 2}
    assert _rows(manifest) == 4
    os.replace(a, away)  # gone again: still tried (and failed) by every run
    s = run()
    assert (s.done, s.skipped, len(s.failed)) == (0, 2, 1)


def test_caption_into_a_folder_of_parts_resumes_and_merges(inputs: Path, tmp_path: Path) -> None:
    files = [inputs / "a.mp4", inputs / "b.mp4"]
    parts = f"{tmp_path / 'results'}/"
    _caption(files[:1], parts, part="0")
    s = _caption(files, parts, part="1", format="parquet")
    assert (s.done, s.skipped) == (1, 1)  # done keys from every part
    assert sorted(p.name for p in Path(parts).iterdir()) == [
        ".part-0.jsonl.inputs",  # each part's input ledger
        ".part-1.parquet.inputs",
        "part-0.jsonl",
        "part-1.parquet",
    ]
    res = CliRunner().invoke(cli, ["merge", parts, "-o", str(tmp_path / "all.parquet")])
    assert res.exit_code == 0, res.output
    assert "2 record(s) from 2 file(s)" in res.output
    import pandas as pd

    df = pd.read_parquet(tmp_path / "all.parquet")
    assert sorted(map(os.path.basename, df["source"])) == ["a.mp4", "b.mp4"]
    assert [json.loads(c)["index"] for c in df["clip"]] == [0, 0]


def test_cli_output_options(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    args = ["sample", str(inputs / "a.mp4"), "-n", "2", "-o", str(out), "--no-sheet",
            "--workers", "0", "--manifest-format", "parquet"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "manifest.parquet" in res.output and (out / "manifest.parquet").is_file()
    res = CliRunner().invoke(cli, ["merge", str(out), "-o", str(tmp_path / "m.jsonl")])
    assert res.exit_code == 0, res.output
    (rec,) = read_records(tmp_path / "m.jsonl")
    assert rec["frames"][0].startswith("s/")  # rebased from s/ to the merged file's folder
    assert (tmp_path / rec["frames"][0]).is_file()
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "nothing"), "-o", "x.jsonl"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_the_output_option_takes_a_folder_of_parts_only_when_it_says_so(tmp_path: Path) -> None:
    import click

    from framepipe.cli.options import OutputPath

    t = OutputPath()
    assert t.convert(f"{tmp_path}/new/", None, None) == f"{tmp_path}/new/"
    assert t.convert(str(tmp_path / "r.jsonl"), None, None) == str(tmp_path / "r.jsonl")
    with pytest.raises(click.BadParameter, match="is a directory"):
        t.convert(str(tmp_path), None, None)  # a folder that is not an output yet
    (tmp_path / "part-0.jsonl").write_text("")
    assert t.convert(str(tmp_path), None, None) == str(tmp_path)  # it holds parts now


def test_a_killed_run_then_a_rerun_leaves_one_record_per_clip(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in"
    src.mkdir()
    (src / "a_broken.mp4").write_bytes(b"not a video")
    vids = [engine_plugins.make_video(src / f"v{k:02d}.mp4", 8, seed=k) for k in range(40)]
    out = tmp_path / "s"
    args = ["sample", "-n", "2", "-o", str(out), "--no-sheet", "--workers", "0"]
    assert CliRunner().invoke(cli, [*args, str(src / "a_broken.mp4"), str(vids[0])]).exit_code == 1
    manifest = out / "manifest.jsonl"
    assert len(list(read_records(manifest))) == 2
    # the same command over every input, killed once it has re-written the failed record
    # and written some new ones: appended records stay, not compacted yet
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "framepipe", *args, str(src)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(read_records(manifest))) < 5:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    lines = list(read_records(manifest))
    assert len(lines) > len({r["key"] for r in lines})  # the retried failure, twice
    assert len(list(read_output(manifest))) == len({r["key"] for r in lines})
    res = CliRunner().invoke(cli, [*args, str(src)])
    assert res.exit_code == 1, res.output
    recs = list(read_records(manifest))
    assert len(recs) == 41 and len({r["key"] for r in recs}) == 41
    assert _by_source(recs)["a_broken.mp4"] == ["failed"]


def test_clip_seconds_written_another_way_is_the_same_setting(inputs: Path, tmp_path: Path) -> None:
    # --clip-seconds implies --clips windows, a window's stride is its length by default,
    # and 1 second is 1.0: said either way, a re-run finds its clips done (it answered
    # them all again, and the output held two records of every clip)
    out = tmp_path / "s"
    ways = [
        SampleConfig(n=2, clip_seconds=0.25),  # what `--clip-seconds 0.25` gives
        SampleConfig(n=2, clips="windows", clip_seconds=0.25),
        SampleConfig(n=2, clips="windows", clip_seconds=0.25, stride_seconds=0.25),
    ]
    first = sample([inputs], out, ways[0], workers=0, sheets=False)
    assert first.done == 5  # a.mp4 (20 frames at 30 fps) in 3 windows, b.mp4 in 2
    for cfg in ways[1:]:
        s = sample([inputs], out, cfg, workers=0, sheets=False)
        assert (s.done, s.skipped) == (0, 5)
    ints = tmp_path / "i"
    sample([inputs], ints, SampleConfig(n=2, clip_seconds=1), workers=0, sheets=False)
    s = sample([inputs], ints, SampleConfig(n=2, clip_seconds=1.0), workers=0, sheets=False)
    assert (s.done, s.skipped) == (0, 2)
    assert len(list(read_output(out / "manifest.jsonl"))) == 6  # 5 clips and broken.mp4
