"""Outputs for the next tool: one record per clip after any sequence of runs (compaction),
Parquet, folders of part files, ``merge``, and loading every kind of output with pandas,
pyarrow and datasets."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import framepipe.output.store
from framepipe.errors import ConfigError
from framepipe.output import (
    JsonlWriter,
    ParquetWriter,
    compact_jsonl,
    merge,
    open_writer,
    read_done_keys,
    read_output,
    read_records,
    record_files,
)
from framepipe.output.compact import Current, digests, keep_mask, record_meta
from framepipe.output.ledger import Ledger, current_clips, ledger_of, merge_ledgers
from framepipe.output.parquet import from_row, read_parquet, to_row
from framepipe.records import InputPlan, failed_record
from framepipe.types import ClipResult


def clip_rec(
    source: str, key: str, *, ok: bool = True, ikey: str | None = None, **kw: Any
) -> ClipResult:
    extra = {"input_key": ikey} if ikey else {}
    clip = {"index": 0, "label": "whole", "start_frame": 0, "end_frame": 9}
    if ok:
        return ClipResult(source=source, key=key, clip=clip, extra=extra, **kw)
    return failed_record(source, "broken", key=key, clip=clip, extra=extra, **kw)


def input_failure(source: str, key: str) -> ClipResult:
    return failed_record(source, "cannot open", key=key)


def keys_and_status(path: Any) -> list[tuple[str, str]]:
    return [(r["key"], r["status"]) for r in read_output(path)]


# -- the rule ----------------------------------------------------------------------------------
def test_latest_record_of_a_key_wins_and_whole_input_failures_are_superseded() -> None:
    recs = [
        input_failure("a", "A"),  # a could not be opened ...
        clip_rec("b", "B1", ok=False),
        clip_rec("a", "A1", ikey="A"),  # ... later it could: its failure goes
        clip_rec("b", "B1"),  # the retried clip replaces the failed one
        input_failure("c", "C"),  # no later clip record of c: stays
        clip_rec("c", "C1", ikey="OTHER"),  # (another setting's input key)
    ]
    metas = [record_meta(r.to_json()) for r in recs]
    assert keep_mask(metas) == [False, False, True, True, True, True]
    # a failed record never replaces an ok one (two outputs merged may hold both)
    both = [clip_rec("a", "A1"), clip_rec("a", "A1", ok=False)]
    assert keep_mask([record_meta(r.to_json()) for r in both]) == [True, False]
    # a whole-input failure after the input's clips (the rest failed) is kept
    late = [clip_rec("a", "A1", ikey="A"), input_failure("a", "A")]
    assert keep_mask([record_meta(r.to_json()) for r in late]) == [True, True]


def test_a_whole_input_failure_goes_when_the_input_was_read_and_its_records_stand() -> None:
    recs = [
        clip_rec("a", "A1", ikey="A"),  # a read to its end: two clips
        clip_rec("a", "A2", ok=False, ikey="A"),
        clip_rec("b", "B1", ikey="B"),  # b: one of its two clips so far
        input_failure("a", "A"),  # a, b missing for a run (a 404, moved away)
        input_failure("b", "B"),
        input_failure("c", "C"),  # c never read
    ]
    metas = [record_meta(r.to_json()) for r in recs]
    plans = Current(frozenset("AB"), frozenset({"A1", "A2", "B1", "B2"}), {"A": 2, "B": 2})
    assert keep_mask(metas, plans) == [True, True, True, False, True, True]
    # the same with digests, as the ledgers give them
    digested = Current(digests(plans.inputs), digests(plans.clips), np.array([2, 2]))
    assert keep_mask(metas, digested) == [True, True, True, False, True, True]
    # without the plans' sizes nothing says an input is complete: the failures stay
    assert keep_mask(metas, Current(plans.inputs, plans.clips)) == [True] * 6


def test_an_inputs_latest_plan_supersedes_the_records_of_its_earlier_versions() -> None:
    recs = [
        clip_rec("a", "A1v1", ikey="A"),  # a's first version: two clips
        clip_rec("a", "A2v1", ikey="A"),
        clip_rec("b", "B1", ikey="B"),  # b has no plan yet: its records stay
        clip_rec("a", "A1v2", ikey="A"),  # a changed in place: one clip so far
        clip_rec("c", "C1", ikey="C"),
    ]
    metas = [record_meta(r.to_json()) for r in recs]
    # no plan of a: nothing to tell versions apart, all stay
    assert keep_mask(metas, Current(frozenset(), frozenset())) == [True] * 5
    # until the new version was read to its end, the old one's plan is the latest: the new
    # version's record goes (a run stopped half-way through it does that input again)
    v1 = Current(frozenset({"A"}), frozenset({"A1v1", "A2v1"}))
    assert keep_mask(metas, v1) == [True, True, True, False, True]
    # once it was, only its own clips' records stay (here one of its two, a run stopped)
    latest = Current(frozenset({"A", "C"}), frozenset({"A1v2", "A2v2", "C1"}))
    assert keep_mask(metas, latest) == [False, False, True, True, True]


def test_records_without_a_key_stay_whatever_the_ledger_says() -> None:
    keyless = {**clip_rec("a", "A1v1", ikey="A").to_json(), "key": None}
    metas = [record_meta(keyless), record_meta(clip_rec("a", "A1v2", ikey="A").to_json())]
    latest = Current(frozenset({"A"}), frozenset({"A1v2"}))
    assert keep_mask(metas, latest) == [True, True]
    assert keep_mask(metas, current_clips([], digested=True)) == [True, True]


A_V1 = Current(frozenset({"A"}), frozenset({"A1v1"}), {"A": 1})


def test_merged_ledgers_keep_each_inputs_latest_plan(tmp_path: Path) -> None:
    plans = [  # a read as version 1, then 2, then 1 again (the file put back)
        InputPlan("a1", ("A1v1",), "a", of="A"),
        InputPlan("a2", ("A1v2",), "a", of="A"),
        InputPlan("a1", ("A1v1",), "a", of="A"),
    ]
    ledgers = []
    for k, plan in enumerate(plans):
        ledger = Ledger(tmp_path / f"part-{k}.jsonl")
        ledger.add(plan)
        ledger.close()
        ledgers.append(ledger.path)
    assert current_clips(ledgers) == A_V1
    merge_ledgers(ledgers, tmp_path / "all.jsonl")
    assert current_clips([ledger_of(tmp_path / "all.jsonl")]) == A_V1
    # one ledger: the same plan again after another is written again (it is the latest)
    one = Ledger(tmp_path / "one.jsonl")
    assert [one.add(p) for p in plans] == [False, True, True]
    assert one.add(plans[2]) is False
    one.close()
    assert len(one.path.read_text().splitlines()) == 3
    assert current_clips([one.path]) == A_V1


class _GrowingLedger(type(Path())):  # type: ignore[misc]
    """A ledger that another writer appends ``plan`` to once it was read ``after`` times
    (its ``exists`` is asked once per pass over it): a run still going while a merge, a
    report or a part's compaction reads it."""

    reads = after = 0
    plan: InputPlan

    def exists(self, *args: Any, **kw: Any) -> bool:
        _GrowingLedger.reads += 1
        if _GrowingLedger.reads == _GrowingLedger.after + 1:
            other = Ledger(self.with_name(self.name[1 : -len(".inputs")]))
            other.add(_GrowingLedger.plan)
            other.close()
        return super().exists(*args, **kw)


@pytest.mark.parametrize("new_input", [True, False])
@pytest.mark.parametrize("reader", ["current_clips", "merge_ledgers"])
def test_the_inputs_latest_plans_stay_right_while_a_ledger_grows(
    tmp_path: Path, new_input: bool, reader: str
) -> None:
    a, b = Ledger(tmp_path / "part-a.jsonl"), Ledger(tmp_path / "part-b.jsonl")
    a.add(InputPlan("a1", ("A1v1",), "a", of="A"))
    b.add(InputPlan("c1", ("C1",), "c", of="C"))
    a.close()
    b.close()
    # while it is read, another writer appends a plan: of a new input, or of a new version
    _GrowingLedger.plan = (
        InputPlan("d1", ("D1",), "d", of="D")
        if new_input
        else InputPlan("a2", ("A1v2",), "a", of="A")
    )
    _GrowingLedger.reads, _GrowingLedger.after = 0, 1 if reader == "current_clips" else 2
    ledgers = [_GrowingLedger(a.path), b.path]
    if reader == "merge_ledgers":
        merge_ledgers(ledgers, tmp_path / "all.jsonl")
        ledgers = [ledger_of(tmp_path / "all.jsonl")]
    # as the ledgers were when first read: the plan appended since is left out, none lost
    latest = Current(frozenset({"A", "C"}), frozenset({"A1v1", "C1"}), {"A": 1, "C": 1})
    assert current_clips(ledgers) == latest


def _run(
    path: Path, plan: InputPlan, *keys: str, part: str | None = None, fmt: str | None = None
) -> None:
    """A run that reads ``plan``'s input to its end: its records, then its plan."""
    with open_writer(path, fmt, part=part) as w:
        for key in keys:
            w.write(clip_rec("a", key, ikey=plan.of))
        w.plan(plan)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_run_with_nothing_to_write_leaves_no_empty_part_in_a_folder(
    tmp_path: Path, fmt: str
) -> None:
    v1 = InputPlan("a1", ("A1v1",), "a", of="A")
    folder = tmp_path / "out"
    _run(folder, v1, "A1v1", part="1", fmt=fmt)
    with open_writer(folder, fmt, part="2") as w:  # everything done already
        assert w.is_done("A1v1")
    assert sorted(p.name for p in folder.iterdir()) == [f".part-1.{fmt}.inputs", f"part-1.{fmt}"]
    with open_writer(folder, fmt, part="1"):  # a part that was there stays
        pass
    assert [r["key"] for r in read_output(folder)] == ["A1v1"]
    with open_writer(tmp_path / f"r.{fmt}") as w:  # a single file is the output: kept
        pass
    assert (tmp_path / f"r.{fmt}").exists() and list(read_output(tmp_path / f"r.{fmt}")) == []


def test_an_inputs_latest_version_wins_whatever_the_files_modification_times(
    tmp_path: Path,
) -> None:
    v1, v2 = InputPlan("a1", ("A1v1",), "a", of="A"), InputPlan("a2", ("A1v2",), "a", of="A")
    # two outputs (shards, part files): a read in one, then changed in place and read in
    # the other; then copied (scp, rsync without -t) newest first
    first, second = tmp_path / "s1.jsonl", tmp_path / "s0.jsonl"
    _run(first, v1, "A1v1")
    _run(second, v2, "A1v2")
    os.utime(second, ns=(10**18, 10**18))
    os.utime(first, ns=(2 * 10**18, 2 * 10**18))
    assert [r["key"] for r in read_output([first, second])] == ["A1v2"]
    merge([first, second], tmp_path / "all.jsonl")
    assert [r["key"] for r in read_output(tmp_path / "all.jsonl")] == ["A1v2"]
    # a folder: the first version put back and read again into the part that held it
    folder = tmp_path / "out"
    _run(folder, v1, "A1v1", part="0")
    _run(folder, v2, "A1v2", part="1")
    _run(folder, v1, "A1v1", part="0")
    os.utime(folder / "part-0.jsonl", ns=(10**18, 10**18))
    assert [r["key"] for r in read_output(folder)] == ["A1v1"]
    # a clip of it retried into the part whose own latest plan is the second version
    _run(folder, v1, "A1v1", part="1")
    assert [r["key"] for r in read_records(folder / "part-1.jsonl")] == ["A1v1"]
    assert [r["key"] for r in read_output(folder)] == ["A1v1"]


def a_failed_and_b_ok(out: Path) -> tuple[Path, Path]:
    """``out`` holding A1 failed and B1 ok, and the file a run appends to (Parquet: its
    journal)."""
    with open_writer(out) as w:
        w.write(clip_rec("a", "A1", ok=False))
        w.write(clip_rec("b", "B1"))
    return out, framepipe.output.store.journal_of(out) if out.suffix == ".parquet" else out


def appended(log: Path, *recs: Any) -> None:
    """``recs`` appended to ``log`` as a run appends them."""
    with open(log, "a", encoding="utf-8") as fh:
        for rec in recs:
            fh.write(json.dumps(rec.to_json()) + "\n")


def between_a_reads_passes(monkeypatch: pytest.MonkeyPatch, then: Callable[[], None]) -> None:
    """``then()`` once, when the next read has counted its files' records (its first pass)
    and not yet read them (its second)."""
    real = framepipe.output.store.keep_mask

    def hooked(*args: Any, **kw: Any) -> list[bool]:
        monkeypatch.setattr(framepipe.output.store, "keep_mask", real)
        keep = real(*args, **kw)
        then()
        return keep

    monkeypatch.setattr(framepipe.output.store, "keep_mask", hooked)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_merge_or_read_while_a_run_appends_has_the_records_first_read(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, log = a_failed_and_b_ok(tmp_path / f"r.{fmt}")

    def appending() -> None:  # a run appends meanwhile
        appended(log, clip_rec("a", "A1"), clip_rec("c", "C1"))  # (A1 retried)

    between_a_reads_passes(monkeypatch, appending)
    merge([out], tmp_path / "m.jsonl")
    assert keys_and_status(tmp_path / "m.jsonl") == [("A1", "failed"), ("B1", "ok")]
    assert keys_and_status(out) == [("B1", "ok"), ("A1", "ok"), ("C1", "ok")]  # read after


def test_a_read_that_catches_a_line_mid_write_keeps_every_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a run appends a long record (several pages: more than one write reaches the file)
    # while a read's first pass is at the end of the file: it sees half a line, then,
    # reading on, the rest of it and the records after it; the second pass sees them whole
    out = tmp_path / "r.jsonl"
    lines = [json.dumps(clip_rec(s, k, ok=ok).to_json()) + "\n" for s, k, ok in
             [("a", "A1", False), ("b", "B1", True), ("a", "A1", True)]]  # fmt: skip
    cut = len(lines[1]) // 2
    out.write_text(lines[0] + lines[1][:cut], encoding="utf-8")
    real_open = open

    class Growing(io.FileIO):
        """The file, with the rest appended when a read finds its end the second time
        (the first: the check of its head, before the lines are read)."""

        ends = 0

        def readinto(self, buffer: Any) -> int:
            n = super().readinto(buffer)
            Growing.ends += n == 0
            if n == 0 and Growing.ends == 2:
                with real_open(out, "a", encoding="utf-8") as fh:
                    fh.write(lines[1][cut:] + lines[2])
            return n or 0

    def opened(path: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        if Path(path) == out and mode == "rb":
            return io.BufferedReader(Growing(path))
        return real_open(path, mode, *args, **kw)

    monkeypatch.setattr(framepipe.output.store, "open", opened, raising=False)
    got = keys_and_status(out)
    monkeypatch.undo()
    # what the first pass saw whole: A1 failed (B1 was half written, A1 ok not yet there)
    assert got == [("A1", "failed")]
    assert sorted(keys_and_status(out)) == [("A1", "ok"), ("B1", "ok")]  # read after


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_merge_racing_a_runs_compaction_keeps_every_clip(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, log = a_failed_and_b_ok(tmp_path / f"r.{fmt}")
    appended(log, clip_rec("a", "A1"))  # A1 retried by a run killed before its end

    def compacting() -> None:  # a run ends and compacts (folds) the file: replaced
        with open_writer(out):
            pass

    for read in (
        lambda: merge([out], tmp_path / "m.jsonl") and read_output(tmp_path / "m.jsonl"),
        lambda: read_output(out),
    ):
        between_a_reads_passes(monkeypatch, compacting)
        assert sorted((r["key"], r["status"]) for r in read()) == [("A1", "ok"), ("B1", "ok")]
        appended(log, clip_rec("b", "B1"))  # (superseded again, for the next read)
    assert sorted(keys_and_status(out)) == [("A1", "ok"), ("B1", "ok")]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX open-file limits")
def test_a_folder_of_more_parts_than_open_files_allowed_reads_every_record(
    tmp_path: Path,
) -> None:
    # a read holds its files open between its passes (above); past the limit, by name
    for i in range(120):
        with open_writer(tmp_path / "out", part=str(i)) as w:
            w.write(clip_rec(f"s{i}", f"K{i}"))
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))\n"
        "from framepipe.output import merge, read_output\n"
        "print(sum(1 for _ in read_output(sys.argv[1])), merge([sys.argv[1]], sys.argv[2]).records)"
    )
    args = [sys.executable, "-c", code, str(tmp_path / "out"), str(tmp_path / "m.jsonl")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["120", "120"]


def test_a_merge_stopped_at_either_move_leaves_one_version_of_each_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = InputPlan("a1", ("A1v1",), "a", of="A"), InputPlan("a2", ("A1v2",), "a", of="A")
    parts, out = tmp_path / "parts", tmp_path / "all.jsonl"
    _run(parts, v1, "A1v1", part="0")
    merge([parts], out)
    _run(parts, v2, "A1v2", part="0")  # the input changed in place and read again
    real = os.replace
    # stopped (Ctrl-C, a kill) just before the records move, then just before the ledger's
    for stop_at, left in ((out, ["A1v1"]), (ledger_of(out), ["A1v2"])):

        def replace(src: Any, dst: Any, stop: Path = stop_at) -> None:
            if Path(dst) == stop:
                raise KeyboardInterrupt
            real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            merge([parts], out)
        monkeypatch.setattr(os, "replace", real)
        assert [r["key"] for r in read_output(out)] == left
    merge([parts], out)
    assert [r["key"] for r in read_output(out)] == ["A1v2"]
    assert current_clips([ledger_of(out)]).clips == {"A1v2"}
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_part_is_compacted_by_the_latest_version_in_its_whole_folder(
    tmp_path: Path, fmt: str
) -> None:
    v1 = InputPlan("a1", ("A1v1",), "a", of="A")
    v2 = InputPlan("a2", ("A1v2", "A2v2"), "a", of="A")
    folder = tmp_path / "out"
    _run(folder, v1, "A1v1", part="0", fmt=fmt)
    _run(folder, v2, "A1v2", part="1", fmt=fmt)
    # a run stopped before its plan: a clip of the second version into part 0, whose own
    # ledger ends with the first version; its records stay (the folder's latest is the
    # second version), the first version's go
    with open_writer(folder, fmt, part="0") as w:
        w.write(clip_rec("a", "A2v2", ikey="A"))
    read = read_records if fmt == "jsonl" else read_parquet  # the file as it is
    assert [r["key"] for r in read(folder / f"part-0.{fmt}")] == ["A2v2"]
    assert sorted(r["key"] for r in read_output(folder)) == ["A1v2", "A2v2"]


def _write(path: Any, recs: list[ClipResult], **kw: Any) -> Path:
    with open_writer(path, **kw) as w:
        for r in recs:
            w.write(r)
        return w.path


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_rerun_replaces_retried_records(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"r.{fmt}"
    first = [clip_rec("a", "k1"), clip_rec("b", "k2", ok=False), input_failure("c", "k3")]
    _write(out, first)
    with open_writer(out) as w:
        assert w.done_keys == {"k1"}
        w.write(clip_rec("b", "k2"))
        w.write(clip_rec("c", "k4", ikey="k3"))
    assert keys_and_status(out) == [("k1", "ok"), ("k2", "ok"), ("k4", "ok")]
    if fmt == "jsonl":  # the file itself holds one record per clip
        assert [r["key"] for r in read_records(out)] == ["k1", "k2", "k4"]
    # --no-retry-failed: failed records count as done and are kept
    _write(out, [clip_rec("d", "k5", ok=False)])
    assert read_done_keys(out, retry_failed=False) == {"k1", "k2", "k4", "k5"}
    with open_writer(out, retry_failed=False) as w:
        assert "k5" in w.done_keys
    assert ("k5", "failed") in keys_and_status(out)


def test_a_killed_run_keeps_its_records_and_the_next_run_compacts(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    _write(out, [clip_rec("a", "k1", ok=False), clip_rec("b", "k2")])
    w = JsonlWriter(out)
    w.write(clip_rec("a", "k1"))
    # killed here: no close; every record stays on disk
    assert [r["key"] for r in read_records(out)] == ["k1", "k2", "k1"]
    assert read_done_keys(out) == {"k1", "k2"}
    w._fh.close()
    with open_writer(out) as w2:
        assert w2.done_keys == {"k1", "k2"}
    assert [(r["key"], r["status"]) for r in read_records(out)] == [("k2", "ok"), ("k1", "ok")]
    assert compact_jsonl(out) == 0  # nothing left to drop: the file is not rewritten


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_changed_input_read_to_its_end_replaces_an_earlier_versions_unplanned_records(
    tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"r.{fmt}"
    # a run stopped half-way through a's first version: one record of its two, no plan
    _write(out, [clip_rec("a", "A1v1", ikey="A")])
    # a changed in place, then read to its end: its plan supersedes the first version
    _run(out, InputPlan("a2", ("A1v2", "A2v2"), "a", of="A"), "A1v2", "A2v2")
    assert [r["key"] for r in read_output(out)] == ["A1v2", "A2v2"]
    raw = read_records(out) if fmt == "jsonl" else read_parquet(out)
    assert [r["key"] for r in raw] == ["A1v2", "A2v2"]  # the file itself: one per clip


def test_the_file_is_rewritten_only_when_something_is_superseded(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    _write(out, [clip_rec("a", "k1")])
    inode = out.stat().st_ino
    _write(out, [clip_rec("b", "k2")])
    assert out.stat().st_ino == inode  # only appended
    _write(out, [clip_rec("a", "k1", answers=["new"])])
    assert out.stat().st_ino != inode  # compacted: a copy moved into place
    assert [(r["key"], r["answers"]) for r in read_records(out)] == [("k2", None), ("k1", ["new"])]


def test_compaction_waits_for_the_last_writer(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    _write(out, [clip_rec("a", "k1", ok=False)])
    w1 = open_writer(out)
    w2 = open_writer(out)
    w1.write(clip_rec("a", "k1"))
    w1.close()  # w2 still appends: no rewrite under it
    w2.write(clip_rec("b", "k2"))
    assert [r["key"] for r in read_records(out)] == ["k1", "k1", "k2"]
    w2.close()
    assert [r["key"] for r in read_records(out)] == ["k1", "k2"]


# -- parquet -----------------------------------------------------------------------------------
def test_parquet_rows_round_trip_to_the_jsonl_record() -> None:
    rec = clip_rec(
        "a.mp4",
        "k",
        ikey="i",
        indices=[1, 5],
        timestamps_s=[0.04, None],
        views=[{"name": "v", "pose_c2w": None}],
        selection={"shots": [[0, 5]]},
        timings_s={"decode_s": 0.1},
        answers=["x"],
    ).to_json()
    rec["tokens"] = {"prompt": 3, "new": [1]}
    assert from_row(to_row(rec)) == rec
    failed = input_failure("b", "k2").to_json()
    assert from_row(to_row(failed)) == failed


def test_parquet_journal_survives_a_kill(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    _write(out, [clip_rec("a", "k1")])
    w = ParquetWriter(out)
    w.write(clip_rec("b", "k2"))  # killed: the record is in the journal only
    assert read_done_keys(out) == {"k1", "k2"}
    assert len(record_files(out)) == 2
    w._log._fh.close()
    with open_writer(out) as w2:
        assert w2.done_keys == {"k1", "k2"}
    assert record_files(out) == [out] and keys_and_status(out) == [("k1", "ok"), ("k2", "ok")]


# -- folders of parts and merge ------------------------------------------------------------------
def test_parts_resume_and_merge(tmp_path: Path) -> None:
    parts = tmp_path / "results"
    p0 = _write(f"{parts}/", [clip_rec("a", "k1"), clip_rec("b", "k2", ok=False)], part="00000")
    p1 = _write(parts, [clip_rec("c", "k3")], part="00001", format="parquet")
    assert p0.name == "part-00000.jsonl" and p1.name == "part-00001.parquet"
    os.utime(p0, ns=(time.time_ns() - 10**9,) * 2)
    assert read_done_keys(parts) == {"k1", "k3"}
    with open_writer(parts, part="00002") as w:  # done keys from every part
        assert w.done_keys == {"k1", "k3"}
        w.write(clip_rec("b", "k2"))
    for fmt in ("jsonl", "parquet"):
        res = merge([parts], tmp_path / f"all.{fmt}")
        assert (res.records, res.dropped, res.files) == (3, 1, 3)
        got = keys_and_status(tmp_path / f"all.{fmt}")
        assert sorted(got) == [("k1", "ok"), ("k2", "ok"), ("k3", "ok")]
    # merging into one of the inputs, again, changes nothing
    merge([tmp_path / "all.jsonl", parts], tmp_path / "all.jsonl")
    assert len(list(read_records(tmp_path / "all.jsonl"))) == 3


def test_merge_rebases_relative_frame_paths(tmp_path: Path) -> None:
    shard = tmp_path / "shard1"
    _write(shard / "manifest.jsonl", [clip_rec("a", "k1", frames=["a/f0.jpg"])])
    res = merge([shard], tmp_path / "merged" / "all.jsonl")
    (rec,) = read_records(res.output)
    assert rec["frames"] == ["../shard1/a/f0.jpg"]


# -- loading by the next tool ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_outputs_load_in_pandas_pyarrow_and_datasets(tmp_path: Path, fmt: str) -> None:
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    recs = [
        clip_rec("a", "k1", indices=[0, 4], timestamps_s=[0.0, 0.16], answers=["x"]),
        input_failure("b", "k2"),
        clip_rec("c", "k3", ikey="z", views=[{"name": "v0", "pose_c2w": [[1.0] * 4] * 4}]),
    ]
    single = _write(tmp_path / f"r.{fmt}", recs)
    folder = tmp_path / "parts"
    _write(folder, recs[:2], part="0", format=fmt)
    _write(folder, recs[2:], part="1", format=fmt)
    for data_files in ([str(single)], sorted(str(p) for p in folder.glob(f"part-*.{fmt}"))):
        if fmt == "jsonl":
            df = pd.concat([pd.read_json(f, lines=True) for f in data_files])
        else:
            df = pd.concat([pd.read_parquet(f) for f in data_files])
        assert list(df["key"]) == ["k1", "k2", "k3"]
        assert list(df["status"]) == ["ok", "failed", "ok"]
        if fmt == "jsonl" and len(data_files) > 1:
            # JSON's types are inferred per file (a column all null in one part is typed
            # null there): several JSONL parts are merged first, or read as Parquet
            merged = merge(folder, tmp_path / "merged.jsonl").output
            data_files = [str(merged)]
        ds = datasets.load_dataset(
            "json" if fmt == "jsonl" else "parquet",
            data_files=data_files,
            split="train",
            cache_dir=str(tmp_path / "hf"),
        )
        assert ds["key"] == ["k1", "k2", "k3"] and ds.num_rows == 3
        if fmt == "parquet":  # nested objects are JSON text
            assert json.loads(ds["clip"][0])["end_frame"] == 9 and ds["clip"][1] is None
            assert ds["indices"][0] == [0, 4]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(single).num_rows == 3


def test_the_report_reads_parquet_and_folders_of_parts(tmp_path: Path) -> None:
    from framepipe.report import write_report

    raw = tmp_path / "raw.jsonl"  # as a killed run leaves it: the retried clip twice
    lines = [clip_rec("a.mp4", "k1", ok=False), clip_rec("a.mp4", "k1")]
    raw.write_text("".join(json.dumps(r.to_json()) + "\n" for r in lines))
    _write(tmp_path / "r.parquet", [clip_rec("c.mp4", "k3")])
    _write(f"{tmp_path / 'parts'}/", [clip_rec("b.mp4", "k2")], part="x")
    paths = [raw, tmp_path / "r.parquet", tmp_path / "parts"]
    html = write_report(paths, tmp_path / "rep.html").read_text()
    assert all(name in html for name in ("a.mp4", "b.mp4", "c.mp4"))
    assert "broken" not in html  # the retried clip's old record is not shown


def test_parquet_keeps_its_types_where_json_inference_fails(tmp_path: Path) -> None:
    """A long run: the first row group has no failure (``error`` all null, no ``stage``);
    Parquet's fixed schema still loads in ``datasets`` as one table."""
    datasets = pytest.importorskip("datasets")
    n = 3 * 2048
    recs = [clip_rec("v.mp4", f"k{i}", answers=["a"]) for i in range(n - 10)]
    recs += [failed_record("v.mp4", "x", key=f"f{i}", extra={"stage": "decode"}) for i in range(10)]
    out = _write(tmp_path / "long.parquet", recs)
    ds = datasets.load_dataset(
        "parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == n and sum(e is not None for e in ds["error"]) == 10
    assert [json.loads(x)["stage"] for x in ds["extra"] if x is not None] == ["decode"] * 10


def test_merge_refuses_a_file_name_of_the_other_format(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    with open_writer(src) as w:
        w.write(clip_rec("a.mp4", "k1"))
    for name, named, fmt in (("y.jsonl", "jsonl", "parquet"), ("y.parquet", "parquet", "jsonl")):
        with pytest.raises(ConfigError, match=f"a {named} file name for {fmt} output"):
            merge([src], tmp_path / name, fmt)
        assert not (tmp_path / name).exists()


def test_parquet_output_needs_a_parquet_name(tmp_path: Path) -> None:
    """A name that says no format is read back as JSONL: Parquet bytes there would be lost
    to every later read and resume."""
    src = tmp_path / "a.jsonl"
    with open_writer(src) as w:
        w.write(clip_rec("a.mp4", "k1"))
    with pytest.raises(ConfigError, match=r"r\.out: parquet output needs a \.parquet file name"):
        open_writer(tmp_path / "r.out", "parquet")
    with pytest.raises(ConfigError, match=r"parquet output needs a \.parquet file name"):
        merge([src], tmp_path / "m.out", "parquet")
    assert not (tmp_path / "r.out").exists() and not (tmp_path / "m.out").exists()
    with open_writer(tmp_path / "r.out") as w:  # no format asked: JSONL, as it reads back
        w.write(clip_rec("a.mp4", "k1"))
    assert [r["key"] for r in read_output(tmp_path / "r.out")] == ["k1"]


def test_a_merge_killed_half_way_leaves_its_output_and_no_copy_behind(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "m.jsonl"
    with open(src, "w", encoding="utf-8") as fh:
        for i in range(60000):
            fh.write(json.dumps({"source": f"v{i}.mp4", "key": f"k{i}", "status": "ok"}) + "\n")
    out.write_text('{"source": "old.mp4", "key": "old", "status": "ok"}\n')
    before = out.read_bytes()
    cmd = [sys.executable, "-m", "framepipe", "merge", str(src), "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".m.jsonl.*.tmp")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.kill()  # SIGKILL, while the merged copy is being written
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the merge ended before it could be killed")
    assert out.read_bytes() == before  # the output as it was
    assert merge([src], out).records == 60000  # the next merge clears the copy left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "m.jsonl"]
