"""The input ledger of an output: the plan of every input its records came from.

Beside each records file ``NAME`` (a part file, a ``sample`` manifest, a Parquet file) a
hidden ``.NAME.inputs`` holds one JSON line per input read to its end:
``{"input": plan key, "source": ..., "clips": [the keys of all its clips], "of": the
input's key whatever its version}`` (see :class:`~framepipe.records.InputPlan`). A re-run
reads it with the records: an input whose clips are all done is skipped after the metadata
check that gives its plan key (a stat, a HEAD), never opened or downloaded
(:func:`done_inputs`). A failed clip is not done, so its input is opened again and the clip
retried; a changed input has another plan key, and once it is read to its end its plan is
the input's latest (:func:`current_clips`): the records of its earlier versions are
superseded (see :mod:`framepipe.output.compact`).

It is a file of its own, not lines in the records file, so that the records file stays one
record per line (or row) for every reader (pandas, ``datasets``, Parquet's one schema) and
the records stay what they were. It only caches facts (which clips an input has), never
outcomes: a missing or partial ledger costs reopening inputs, never a wrong skip.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from framepipe.errors import OutputError
from framepipe.records import InputPlan
from framepipe.utils import json_lines, sync_due


def ledger_of(path: str | os.PathLike[str]) -> Path:
    """The ledger beside the records file ``path``."""
    p = Path(path)
    return p.with_name(f".{p.name}.inputs")


def _entries(ledger: Path) -> Iterator[dict[str, Any]]:
    """The entries of ``ledger`` in order (a torn line is skipped)."""
    if not ledger.exists():
        return
    for _, entry in json_lines(ledger):
        if isinstance(entry, dict) and isinstance(entry.get("input"), str):
            yield entry


def read_plans(ledger: Path) -> Iterator[tuple[str, list[str]]]:
    """``(plan key, clip keys)`` of each entry of ``ledger``."""
    for entry in _entries(ledger):
        yield entry["input"], [str(k) for k in entry.get("clips") or ()]


def current_clips(ledgers: Iterable[Path]) -> dict[str, frozenset[str]]:
    """For each input (its ``of`` key) the clip keys of its latest plan in ``ledgers``
    (taken in write order): the clips of the version of it read last."""
    out: dict[str, frozenset[str]] = {}
    for ledger in ledgers:
        for entry in _entries(ledger):
            if isinstance(entry.get("of"), str) and entry["of"]:
                out[entry["of"]] = frozenset(str(k) for k in entry.get("clips") or ())
    return out


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
    is made with the first plan."""

    def __init__(
        self, records: str | os.PathLike[str], *, overwrite: bool = False, fsync: bool = True
    ) -> None:
        self.path = ledger_of(records)
        self.fsync = fsync
        if overwrite:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.keys: set[str] = set()
        self.latest: dict[str, str] = {}  # each input's latest plan key
        for entry in _entries(self.path):
            self.keys.add(entry["input"])
            if isinstance(entry.get("of"), str):
                self.latest[entry["of"]] = entry["input"]
        self._fh: Any = None
        self._sync_at = 0.0

    def add(self, plan: InputPlan) -> bool:
        """Keep ``plan`` (once, unless a plan of another version of the input came since);
        True when it supersedes another plan of the input (records to drop)."""
        before = self.latest.get(plan.of) if plan.of else None
        if plan.key in self.keys and before in (None, plan.key):
            return False
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close
            entry: dict[str, Any] = {
                "input": plan.key,
                "source": plan.source,
                "clips": list(plan.clips),
            }
            if plan.of:
                entry["of"] = plan.of
            self._fh.write(json.dumps(entry, ensure_ascii=True) + "\n")
            self._fh.flush()
            if self.fsync:
                self._sync_at = sync_due(self._fh, self._sync_at)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        self.keys.add(plan.key)
        if plan.of:
            self.latest[plan.of] = plan.key
        return before is not None and before != plan.key

    def close(self) -> None:
        if self._fh is not None:
            if self.fsync:
                sync_due(self._fh, 0.0, now=True)
            self._fh.close()
            self._fh = None


def merge_ledgers(ledgers: Iterable[Path], records: Path) -> None:
    """The ledger of the records file ``records``: every entry of ``ledgers`` (in write
    order), each plan once where it came last (so each input's latest plan stays its
    latest), written beside it and moved into place (none when they hold none)."""
    ledgers = [p for p in ledgers if p.exists()]
    target = ledger_of(records)
    if not ledgers:
        target.unlink(missing_ok=True)
        return
    last: dict[str, dict[str, Any]] = {}
    for ledger in ledgers:
        for entry in _entries(ledger):
            last.pop(entry["input"], None)
            last[entry["input"]] = entry
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for entry in last.values():
            fh.write(json.dumps(entry, ensure_ascii=True) + "\n")
    os.replace(tmp, target)
