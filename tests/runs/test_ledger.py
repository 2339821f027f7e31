"""The input ledger: a re-run skips a finished input after a metadata check only (a stat, a
HEAD), without opening or downloading it; failed clips are still retried, a changed input is
planned again, and the ledger follows shards and ``framepipe merge``. The records files stay
what they were (the ledger is a file of its own)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import engine_faults  # noqa: F401 - registers the zero_div sampler's module
import engine_plugins
import pytest
from click.testing import CliRunner
from generator_doubles import EchoGenerator
from remote_servers import http_server

import framepipe.read_clips
import framepipe.runs.common
from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.errors import GenerationError
from framepipe.generate import GenerationSettings
from framepipe.generate.backend import TransformersBackend
from framepipe.output import ledger_of, read_output, read_records
from framepipe.runs.caption import Pipeline
from framepipe.runs.sample import MANIFEST, sample

CFG = SampleConfig(n=2, clip_seconds=0.34)


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The inputs the read stage opens (``workers=0``: in this process), by file name."""
    counts: Counter[str] = Counter()
    real = framepipe.read_clips.open_source

    def counting(path: Any, *args: Any, **kw: Any) -> Any:
        counts[Path(path).name] += 1
        return real(path, *args, **kw)

    monkeypatch.setattr(framepipe.read_clips, "open_source", counting)
    return counts


@pytest.fixture()
def engines(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The engines the runs open, in order."""
    made: list[Any] = []
    real = framepipe.runs.common.open_engine

    def spying(*args: Any, **kw: Any) -> Any:
        made.append(real(*args, **kw))
        return made[-1]

    monkeypatch.setattr(framepipe.runs.common, "open_engine", spying)
    return made


def _decoders_started(engine: Any) -> int:
    """Decoder processes the local engine ``engine`` started."""
    return sum(d.starts for d in engine.decoders)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ledger")
    engine_plugins.make_video(d / "a.mp4", 30, seed=1)  # three clips of 10 frames
    engine_plugins.make_video(d / "b.mp4", 20, seed=2)  # two
    return d


def _copy(videos: Path, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for p in videos.iterdir():
        (to / p.name).write_bytes(p.read_bytes())
    return to


def test_a_finished_input_is_not_opened_again(
    videos: Path, tmp_path: Path, opened: Counter[str]
) -> None:
    src = _copy(videos, tmp_path / "in")
    out = tmp_path / "out"
    first = sample([src], out, CFG, workers=0)
    assert (first.done, first.skipped) == (5, 0) and opened == {"a.mp4": 1, "b.mp4": 1}
    records = (out / MANIFEST).read_text()
    plans = [json.loads(line) for line in ledger_of(out / MANIFEST).read_text().splitlines()]
    assert sorted((Path(p["source"]).name, len(p["clips"])) for p in plans) == [
        ("a.mp4", 3),
        ("b.mp4", 2),
    ]
    again = sample([src], out, CFG, workers=0)
    assert (again.done, again.skipped) == (0, 5) and opened == {"a.mp4": 1, "b.mp4": 1}
    assert (out / MANIFEST).read_text() == records  # the records file is untouched
    # a changed input has another identity: planned (opened) again, its clips redone
    os.utime(src / "b.mp4", ns=(10**18, 10**18))
    changed = sample([src], out, CFG, workers=0)
    assert (changed.done, changed.skipped) == (2, 3) and opened["b.mp4"] == 2
    assert opened["a.mp4"] == 1
    # --overwrite starts afresh: the ledger too
    fresh = sample([src], out, CFG, workers=0, overwrite=True)
    assert fresh.done == 5 and opened == {"a.mp4": 2, "b.mp4": 3}
    assert len(ledger_of(out / MANIFEST).read_text().splitlines()) == 2


def test_an_input_with_a_failed_clip_is_opened_to_retry_it(
    videos: Path, tmp_path: Path, opened: Counter[str]
) -> None:
    src = _copy(videos, tmp_path / "in")
    (src / "a.mp4").rename(src / "zdiv.mp4")  # the sampler fails its clip 1
    cfg = SampleConfig(n=2, clip_seconds=0.34, sampler="engine_faults:zero_div")
    first = sample([src / "zdiv.mp4"], tmp_path / "out", cfg, workers=0)
    assert (first.done, len(first.failed)) == (2, 1)
    again = sample([src / "zdiv.mp4"], tmp_path / "out", cfg, workers=0)
    assert (again.done, again.skipped, len(again.failed)) == (0, 2, 1)  # only the failed clip
    assert opened["zdiv.mp4"] == 2
    kept = sample([src / "zdiv.mp4"], tmp_path / "out", cfg, workers=0, retry_failed=False)
    assert (kept.done, kept.skipped, kept.failed) == (0, 3, [])  # its failure counts as done
    assert opened["zdiv.mp4"] == 2


def test_the_ledger_follows_shards_and_merge(
    videos: Path, tmp_path: Path, opened: Counter[str]
) -> None:
    src = _copy(videos, tmp_path / "in")
    pipe = Pipeline(generator=EchoGenerator(), sample=CFG, workers=0)  # type: ignore[arg-type]
    parts = f"{tmp_path / 'results'}/"
    for i in range(2):
        assert pipe.run([src], parts, shard=f"{i}/2", part=str(i)).ok
    assert opened == {"a.mp4": 1, "b.mp4": 1}
    folder = pipe.run([src], parts, part="x")  # resumes from every part's ledger
    assert (folder.done, folder.skipped) == (0, 5) and opened == {"a.mp4": 1, "b.mp4": 1}
    merged = tmp_path / "all.jsonl"
    res = CliRunner().invoke(cli, ["merge", parts, "-o", str(merged)])
    assert res.exit_code == 0 and "5 record(s)" in res.output, res.output
    assert len(list(read_output(parts))) == len(list(read_records(merged))) == 5  # records only
    assert len(ledger_of(merged).read_text().splitlines()) == 2  # each input once
    resumed = pipe.run([src], merged)
    assert (resumed.done, resumed.skipped) == (0, 5) and opened == {"a.mp4": 1, "b.mp4": 1}


def test_a_no_op_resume_from_a_fresh_cache_downloads_nothing(videos: Path, tmp_path: Path) -> None:
    root = _copy(videos, tmp_path / "www")
    engine_plugins.make_video(root / "c.mp4", 10, seed=3)
    with http_server(root) as (url, gets):
        uris = [f"{url}/{name}" for name in ("a.mp4", "b.mp4", "c.mp4")]
        out = tmp_path / "out"
        first = sample(uris, out, CFG, cache_dir=tmp_path / "cache1", workers=1)
        assert first.ok and first.done == 6 and sum(gets.values()) == 3
        again = sample(uris, out, CFG, cache_dir=tmp_path / "cache2", workers=1)
        assert (again.done, again.skipped) == (0, 6)
        assert sum(gets.values()) == 3  # metadata requests only: no GET
        assert not (tmp_path / "cache2").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_input_changed_in_place_keeps_only_the_records_of_its_latest_version(
    videos: Path, tmp_path: Path, fmt: str
) -> None:
    src = _copy(videos, tmp_path / "in")
    out = tmp_path / "out"
    b = src / "b.mp4"
    first_mtime = b.stat().st_mtime_ns

    def b_keys() -> list[str]:
        recs = list(read_output(out))
        assert len({r["key"] for r in recs}) == len(recs)  # one record per clip
        return sorted(r["key"] for r in recs if Path(r["source"]).name == "b.mp4")

    assert sample([src], out, CFG, workers=0, format=fmt).done == 5
    v1 = b_keys()
    assert len(v1) == 2
    engine_plugins.make_video(b, 30, seed=3)  # replaced in place: three clips now
    os.utime(b, ns=(10**18, 10**18))
    assert sample([src], out, CFG, workers=0, format=fmt).done == 3
    v2 = b_keys()
    assert len(v2) == 3 and not set(v1) & set(v2)
    assert len(list(read_output(out))) == 6
    (src / "b.mp4").write_bytes((videos / "b.mp4").read_bytes())  # the first version back
    os.utime(b, ns=(first_mtime, first_mtime))
    assert sample([src], out, CFG, workers=0, format=fmt).done == 2
    assert b_keys() == v1 and len(list(read_output(out))) == 5
    # nothing left to do, and the records stay as they are
    again = sample([src], out, CFG, workers=0, format=fmt)
    assert (again.done, again.skipped) == (0, 5) and b_keys() == v1


class StoppedWhileAnswering(EchoGenerator):
    """TEST DOUBLE: a Ctrl-C while the model answers (the clips are read, none answered)."""

    def answer(self, requests: Any) -> Any:
        raise KeyboardInterrupt


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_run_stopped_before_a_changed_input_is_answered_keeps_its_earlier_records(
    videos: Path, tmp_path: Path, fmt: str
) -> None:
    # the clips of b's new version are read (its plan handed on) and wait in a batch to
    # be answered when the run stops: b's earlier records must stand until its new ones
    # are written (they vanished: the plan reached the ledger before its clips' records)
    src = _copy(videos, tmp_path / "in")
    out = tmp_path / f"r.{fmt}"
    b = src / "b.mp4"

    def b_keys() -> list[str]:
        recs = list(read_output(out))
        assert len({r["key"] for r in recs}) == len(recs)  # one record per clip
        return sorted(r["key"] for r in recs if Path(r["source"]).name == "b.mp4")

    def caption(gen: Any) -> Any:
        return Pipeline(generator=gen, sample=CFG, workers=0).run([src], out)

    assert caption(EchoGenerator()).done == 5
    v1 = b_keys()
    assert len(v1) == 2
    engine_plugins.make_video(b, 30, seed=3)  # replaced in place: three clips now
    os.utime(b, ns=(10**18, 10**18))
    with pytest.raises(KeyboardInterrupt):
        caption(StoppedWhileAnswering())
    assert b_keys() == v1  # was []: neither version's records
    assert caption(EchoGenerator()).done == 3
    v2 = b_keys()
    assert len(v2) == 3 and not set(v1) & set(v2)
    assert len(list(read_output(out))) == 6


def test_other_settings_into_one_output_keep_their_own_records(
    videos: Path, tmp_path: Path
) -> None:
    src = _copy(videos, tmp_path / "in")
    out = tmp_path / "out"
    assert sample([src], out, CFG, workers=0).done == 5
    assert sample([src], out, SampleConfig(n=3, clip_seconds=0.34), workers=0).done == 5
    assert len(list(read_output(out))) == 10


class _CountedLoads(TransformersBackend):
    """TEST DOUBLE: the in-process backend around a given generator, counting its loads."""

    def __init__(self, generator: Any) -> None:
        super().__init__(settings=GenerationSettings(batch_size=1), generator=generator)
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        return super().load()


class _FailsFirstClip(EchoGenerator):
    """TEST DOUBLE: the first clip asked about cannot be answered, the others can."""

    def answer(self, requests: Any) -> Any:
        if not self.batches:
            self.batches.append(len(requests))
            raise GenerationError("echo: not this time")
        return super().answer(requests)


def _caption(src: Path, out: Path, gen: EchoGenerator) -> tuple[Any, _CountedLoads]:
    """A caption run of ``src`` into ``out`` answered by ``gen``, and its counted backend."""
    backend = _CountedLoads(gen)
    return Pipeline(backend=backend, sample=CFG, workers=1).run([src], out), backend


def test_a_finished_caption_rerun_starts_no_decoder_and_loads_no_model(
    videos: Path, tmp_path: Path, engines: list[Any]
) -> None:
    src = _copy(videos, tmp_path / "in")
    out = tmp_path / "r.jsonl"

    first, backend = _caption(src, out, EchoGenerator())
    assert (first.done, first.skipped) == (5, 0) and backend.loads == 1
    assert _decoders_started(engines[-1]) == 1
    records = out.read_text()
    again, backend = _caption(src, out, EchoGenerator())
    assert (again.done, again.skipped, again.failed) == (0, 5, [])
    assert backend.loads == 0 and engines[-1].load_s == 0.0
    assert _decoders_started(engines[-1]) == 0  # was 1: a decoder started to skip every input
    assert out.read_text() == records


def test_a_caption_rerun_with_a_failed_clip_loads_the_model_to_answer_it(
    videos: Path, tmp_path: Path, engines: list[Any]
) -> None:
    src = _copy(videos, tmp_path / "in")
    out = tmp_path / "r.jsonl"

    first, _ = _caption(src, out, _FailsFirstClip())
    assert (first.done, len(first.failed)) == (4, 1)
    again, backend = _caption(src, out, EchoGenerator())
    assert (again.done, again.skipped, again.failed) == (1, 4, []) and backend.loads == 1
    assert _decoders_started(engines[-1]) == 1
    recs = list(read_records(out))
    assert len(recs) == 5 and {r["status"] for r in recs} == {"ok"}


def test_a_finished_sample_rerun_starts_no_decoder(
    videos: Path, tmp_path: Path, engines: list[Any]
) -> None:
    src = _copy(videos, tmp_path / "in")
    out = tmp_path / "out"
    assert sample([src], out, CFG, workers=2).done == 5
    assert _decoders_started(engines[-1]) >= 1
    again = sample([src], out, CFG, workers=2)
    assert (again.done, again.skipped) == (0, 5) and _decoders_started(engines[-1]) == 0


def test_a_finished_rerun_over_http_inputs_starts_no_decoder_and_a_changed_object_is_read_again(
    videos: Path, tmp_path: Path, engines: list[Any]
) -> None:
    root = _copy(videos, tmp_path / "www")
    with http_server(root) as (url, gets):
        uris = [f"{url}/a.mp4", f"{url}/b.mp4"]
        out = tmp_path / "out"
        assert sample(uris, out, CFG, cache_dir=tmp_path / "cache", workers=2).done == 5
        assert _decoders_started(engines[-1]) >= 1
        again = sample(uris, out, CFG, cache_dir=tmp_path / "cache", workers=2)
        assert (again.done, again.skipped, again.failed) == (0, 5, [])
        assert _decoders_started(engines[-1]) == 0  # was 2: one a worker, to ask for the metadata
        assert sum(gets.values()) == 2  # and nothing downloaded
        engine_plugins.make_video(root / "b.mp4", 30, seed=9)  # another object: a new ETag
        changed = sample(uris, out, CFG, cache_dir=tmp_path / "cache", workers=2)
        assert (changed.done, changed.skipped, changed.failed) == (3, 3, [])
        assert _decoders_started(engines[-1]) == 1 and gets["/b.mp4"] == 2
    recs = list(read_output(out))
    assert len(recs) == 6 and len({r["key"] for r in recs}) == 6
