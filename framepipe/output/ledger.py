"""The input ledger of an output: the plan of every input its records came from.

Beside each records file ``NAME`` (a part file, a ``sample`` manifest, a Parquet file) a
hidden ``.NAME.inputs`` holds one JSON line per input read to its end:
``{"input": plan key, "source": ..., "clips": [the keys of all its clips], "of": the
input's key whatever its version, "at": when it was written (ns)}`` (see
:class:`~framepipe.records.InputPlan`). A re-run reads it with the records: an input whose
clips are all done is skipped after the metadata check that gives its plan key (a stat, a
HEAD), never opened or downloaded (:func:`done_inputs`). A failed clip is not done, so its
input is opened again and the clip retried; a changed input has another plan key, and once
it is read to its end its plan is the input's latest (:func:`current_clips`; latest by
``at``, not by the files' modification times, which copies and later runs into another part
reorder): the records of its earlier versions are superseded (see
:mod:`framepipe.output.compact`).

It is a file of its own, not lines in the records file, so that the records file stays one
record per line (or row) for every reader (pandas, ``datasets``, Parquet's one schema) and
the records stay what they were. It only caches facts (which clips an input has), never
outcomes: a missing or partial ledger costs reopening inputs, never a wrong skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import OutputError
from framepipe.output.compact import Current, digest, digests
from framepipe.records import InputPlan
from framepipe.utils import append_whole, json_lines, remove_stale_temps, sync_due, temp_beside


def ledger_of(path: str | os.PathLike[str]) -> Path:
    """The ledger beside the records file ``path``."""
    p = Path(path)
    return p.with_name(f".{p.name}.inputs")


def _entries(ledger: Path) -> Iterator[dict[str, Any]]:
    """The entries of ``ledger`` in order (a torn line is skipped)."""
    if not ledger.exists():
        return
    for _, entry in json_lines(ledger, encoding="utf-8-sig"):
        if isinstance(entry, dict) and isinstance(entry.get("input"), str):
            yield entry


def read_plans(ledger: Path) -> Iterator[tuple[str, list[str]]]:
    """``(plan key, clip keys)`` of each entry of ``ledger``."""
    for entry in _entries(ledger):
        yield entry["input"], [str(k) for k in entry.get("clips") or ()]


Order = tuple[int, int, int]
"""When an entry was written: its ``at`` (0 without one), then its place in the ledgers
read (for entries of one time, or without one): the ledger's, then its own in the ledger.
An entry keeps its order while other writers append to any of the ledgers (a second pass
over them finds each entry of the first under the same order)."""


def _ordered(ledgers: Iterable[Path]) -> Iterator[tuple[Order, dict[str, Any]]]:
    """The entries of ``ledgers`` (in that order, each file's in its own), each with its
    :data:`Order`."""
    for i, ledger in enumerate(ledgers):
        for j, entry in enumerate(_entries(ledger)):
            at = entry.get("at")
            yield (at if isinstance(at, int) else 0, i, j), entry


def _of(entry: dict[str, Any]) -> str | None:
    of = entry.get("of")
    return of if isinstance(of, str) and of else None


def _latest(ledgers: Iterable[Path]) -> dict[str, tuple[Order, str]]:
    """Each input's (its ``of`` key's) latest plan in ``ledgers``: its order and plan key."""
    out: dict[str, tuple[Order, str]] = {}
    for order, entry in _ordered(ledgers):
        of = _of(entry)
        if of is not None and (of not in out or out[of][0] < order):
            out[of] = (order, entry["input"])
    return out


def current_clips(ledgers: Iterable[Path], *, digested: bool = False) -> Current:
    """The inputs (their ``of`` keys) with a plan in ``ledgers``, and the clip keys of each
    one's latest plan: the clips of the version of it read last (two passes over the
    ledgers; what is held is one key per input and one per current clip: ``digested``, its
    16-byte digest, see :func:`~framepipe.output.compact.digests`). Entries appended
    between the passes (a run still writing) are left out: they are as the first pass
    found them."""
    ledgers = list(ledgers)
    latest = _latest(ledgers)
    sizes: dict[str, int] = {}  # each input's latest plan's clip count

    def clips() -> Iterator[str]:
        for order, entry in _ordered(ledgers):
            if (of := _of(entry)) is not None and of in latest and latest[of][0] == order:
                keys = {str(k) for k in entry.get("clips") or ()}
                sizes[of] = len(keys)
                yield from keys

    if digested:
        current = digests(clips())
        inputs = digests(latest)  # (sorted: the sizes go in their order)
        by_digest = {digest(of): n for of, n in sizes.items()}
        counts = np.array([by_digest.get(bytes(d), 0) for d in inputs], np.int64)
        return Current(inputs, current, counts)
    return Current(frozenset(latest), frozenset(clips()), sizes)


def done_inputs(ledgers: Iterable[Path], done_keys: Collection[str]) -> dict[str, int]:
    """The plan keys in ``ledgers`` whose clips are all in ``done_keys``, with their clip
    counts (what a re-run skips whole)."""
    out: dict[str, int] = {}
    for ledger in ledgers:
        for key, clips in read_plans(ledger):
            if all(c in done_keys for c in clips):
                out[key] = len(clips)
    return out


class Ledger:
    """Appends plans to the ledger of one records file (each plan once per file); the file
    is made with the first plan. ``scope``: the other ledgers read with it (a folder's
    parts), where a later plan of an input makes its plan here no longer its latest."""

    def __init__(
        self,
        records: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        fsync: bool = True,
        scope: Iterable[Path] = (),
    ) -> None:
        self.path = ledger_of(records)
        self.fsync = fsync
        if overwrite:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.keys: set[str] = set()
        self.latest: dict[str, str] = {}  # each input's latest plan key, here
        for entry in _entries(self.path):  # (appended in time order)
            self.keys.add(entry["input"])
            if (of := _of(entry)) is not None:
                self.latest[of] = entry["input"]
        # and in the whole scope
        self.scope = list(dict.fromkeys([*scope, self.path]))
        self.newest = {of: key for of, (_, key) in _latest(self.scope).items()}
        self._fh: Any = None
        self._sync_at = 0.0

    def add(self, plan: InputPlan) -> bool:
        """Keep ``plan`` (once, unless a plan of another version of the input came since);
        True when it supersedes another plan of the input (records to drop)."""
        before = self.latest.get(plan.of) if plan.of else None
        newest = self.newest.get(plan.of) if plan.of else None
        if plan.key in self.keys and before in (None, plan.key) and newest in (None, plan.key):
            return False
        try:
            if self._fh is None:
                self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close
            entry: dict[str, Any] = {
                "input": plan.key,
                "source": plan.source,
                "clips": list(plan.clips),
                "at": time.time_ns(),
            }
            if plan.of:
                entry["of"] = plan.of
            append_whole(self._fh, (json.dumps(entry, ensure_ascii=True) + "\n").encode())
            if self.fsync:
                self._sync_at = sync_due(self._fh, self._sync_at)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        self.keys.add(plan.key)
        if plan.of:
            self.latest[plan.of] = self.newest[plan.of] = plan.key
        return before is not None and before != plan.key

    def close(self) -> None:
        if self._fh is not None:
            try:
                if self.fsync:
                    sync_due(self._fh, 0.0, now=True)
            except OSError as exc:
                raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
            finally:
                self._fh.close()
                self._fh = None


def merge_ledgers(ledgers: Iterable[Path], records: Path) -> None:
    """The ledger of the records file ``records``: every entry of ``ledgers`` (in the order
    they were written), each plan once where it came last (so each input's latest plan stays
    its latest), written beside it and moved into place (none when they hold none)."""
    staged = stage_merged_ledger(ledgers, records)
    if staged is None:
        ledger_of(records).unlink(missing_ok=True)
    else:
        os.replace(staged, ledger_of(records))


def stage_merged_ledger(ledgers: Iterable[Path], records: Path) -> Path | None:
    """What :func:`merge_ledgers` moves into place, left beside it under a temporary name
    for the caller to move (None when ``ledgers`` hold no entry)."""
    ledgers = [p for p in ledgers if p.exists()]
    if not ledgers:
        return None
    target = ledger_of(records)
    last: dict[str, Order] = {}  # each plan's latest entry
    for order, entry in _ordered(ledgers):
        last[entry["input"]] = max(order, last.get(entry["input"], order))
    remove_stale_temps(target)
    tmp = temp_beside(target)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:  # in the order read: ``at`` keeps the time
            for order, entry in _ordered(ledgers):  # (one appended since: left out)
                if last.get(entry["input"]) == order:
                    fh.write(json.dumps(entry, ensure_ascii=True) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
