"""The input ledger of an output: the plan of every input its records came from.

Beside each records file ``NAME`` (a part file, a ``sample`` manifest, a Parquet file) a
hidden ``.NAME.inputs`` holds one JSON line per input read to its end:
``{"input": plan key, "source": ..., "clips": [the keys of all its clips]}`` (see
:class:`~framepipe.records.InputPlan`). A re-run reads it with the records: an input whose
clips are all done is skipped after the metadata check that gives its plan key (a stat, a
HEAD), never opened or downloaded (:func:`done_inputs`). A failed clip is not done, so its
input is opened again and the clip retried; a changed input has another plan key.

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


def read_plans(ledger: Path) -> Iterator[tuple[str, list[str]]]:
    """``(plan key, clip keys)`` of each entry of ``ledger`` (a torn line is skipped)."""
    if not ledger.exists():
        return
    for _, entry in json_lines(ledger):
        if isinstance(entry, dict) and isinstance(entry.get("input"), str):
            yield entry["input"], [str(k) for k in entry.get("clips") or ()]


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
        self.keys = {key for key, _ in read_plans(self.path)}
        self._fh: Any = None
        self._sync_at = 0.0

    def add(self, plan: InputPlan) -> None:
        if plan.key in self.keys:
            return
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close
            entry = {"input": plan.key, "source": plan.source, "clips": list(plan.clips)}
            self._fh.write(json.dumps(entry, ensure_ascii=True) + "\n")
            self._fh.flush()
            if self.fsync:
                self._sync_at = sync_due(self._fh, self._sync_at)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        self.keys.add(plan.key)

    def close(self) -> None:
        if self._fh is not None:
            if self.fsync:
                sync_due(self._fh, 0.0, now=True)
            self._fh.close()
            self._fh = None


def merge_ledgers(ledgers: Iterable[Path], records: Path) -> None:
    """The ledger of the records file ``records``: every entry of ``ledgers``, each plan
    once, written beside it and moved into place (none when they hold none)."""
    ledgers = [p for p in ledgers if p.exists()]
    target = ledger_of(records)
    if not ledgers:
        target.unlink(missing_ok=True)
        return
    seen: set[str] = set()
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for ledger in ledgers:
            for _, entry in json_lines(ledger):
                key = entry.get("input") if isinstance(entry, dict) else None
                if isinstance(key, str) and key not in seen:
                    seen.add(key)
                    fh.write(json.dumps(entry, ensure_ascii=True) + "\n")
    os.replace(tmp, target)
