"""``merge``: outputs (files, folders of part files, here or in an object store) into one
file, one record per clip (the rule of :mod:`framepipe.output.compact`), written atomically
with the inputs' ledgers merged into its ledger. An output in a store is staged here first
(:func:`~framepipe.output.pull.pull_output`) and merged as the same files downloaded would
be; its records' relative frame paths become URIs of the frames in the store."""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framepipe.errors import ConfigError, OutputError
from framepipe.inputs.remote import is_remote
from framepipe.output.jsonl import atomic_output, check_replaceable, write_jsonl
from framepipe.output.ledger import ledger_of, stage_merged_ledger
from framepipe.output.parquet import write_parquet
from framepipe.output.pull import expand, pull_output
from framepipe.output.store import (
    PathLike,
    format_of,
    is_folder_output,
    journal_of,
    kept_records,
    no_records_in,
    ordered_units,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge` did."""

    output: Path
    records: int  # records in the output
    dropped: int  # records of the inputs superseded by later ones
    files: int  # records files read


class NothingToMerge(OutputError):
    """The inputs of a merge hold no record at all."""


def merge(
    inputs: PathLike | Iterable[PathLike],
    output: PathLike,
    format: str | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    cache_dir: PathLike | None = None,
) -> MergeResult:
    """Merge outputs (files, folders of parts, ``sample`` output folders; here, or URIs in
    an object store with fsspec's ``storage_options``, staged under ``cache_dir``) into one
    local file, one record per clip (latest wins), written atomically. Relative frame paths
    are rewritten to stay right from the output's folder (a store's: as URIs)."""
    out = Path(output)
    if is_remote(str(output)):
        raise ConfigError(
            f"{output}: merge writes a local file (merge here, then copy it to the store)"
        )
    if is_folder_output(out):
        raise ConfigError(f"{out}: merge writes one file, not a folder")
    fmt = format_of(out, format)
    check_replaceable(out, fmt)
    given = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[PathLike] = []
    stores: dict[Path, str] = {}  # a staged copy's folder -> the store folder it comes from
    for p in given:
        if not is_remote(str(p)):
            paths.append(p)
            continue
        for uri in expand(str(p), storage_options):  # (a pattern: what it matches)
            local, origin = pull_output(uri, storage_options, cache_dir)
            stores[(local if local.is_dir() else local.parent).resolve()] = origin
            paths.append(local)
    for p in paths:  # (a shard's folder left empty is no folder of records to leave out)
        if Path(p).is_dir() and not any(u.files() for u in ordered_units(p)):
            raise no_records_in(p)
    units = ordered_units(paths)
    if not units or not any(u.files() for u in units):
        raise OutputError("merge: no records files among the inputs")
    with kept_records(units) as (keep, survivors):  # (a run may compact meanwhile)
        n = _write(units, keep, survivors, out, fmt, stores)
    if fmt == "parquet":
        journal_of(out).unlink(missing_ok=True)
    files = sum(len(u.files()) for u in units)
    dropped = keep.count(False)
    log.info("%s: %d record(s) from %d file(s), %d superseded", out, n, files, dropped)
    return MergeResult(out, n, dropped, files)


def _write(
    units: Sequence[Any],
    keep: list[bool],
    survivors: Iterator[tuple[Any, dict[str, Any]]],
    out: Path,
    fmt: str,
    stores: dict[Path, str],
) -> int:
    """Write ``survivors`` (of ``units``, the mask ``keep``) and the merged ledger to ``out``
    (``stores``: the store folder of each staged copy's folder)."""
    folders = {id(u): u.path.resolve().parent for u in units}  # once a file, not a record
    base = {k: stores.get(f, f) for k, f in folders.items()}
    if not keep:  # before anything is written: an output that held records stays
        names = ", ".join(
            f"{base[id(u)]}/{u.path.name}" if isinstance(base[id(u)], str) else str(u.path)
            for u in units
        )
        raise NothingToMerge(f"{names}: no record to merge")
    out_dir = out.resolve().parent
    kept = (_rebase(rec, base[id(u)], out_dir) for u, rec in survivors)
    staged: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = stage_merged_ledger([u.ledger for u in units], out)
        with atomic_output(out) as tmp:
            write = write_parquet if fmt == "parquet" else write_jsonl
            n = write(kept, tmp)
            # the old ledger goes before the records move, the new one comes after them:
            # stopped between, the file's records stand with no ledger (every one kept),
            # never under a ledger whose plans supersede records that are not written yet
            ledger_of(out).unlink(missing_ok=True)
        if staged is not None:
            os.replace(staged, ledger_of(out))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    return n


def _rebase(rec: dict[str, Any], base: Path | str, out_dir: Path) -> dict[str, Any]:
    """``rec`` with its relative ``frames`` / ``contact_sheet`` paths (relative to ``base``)
    made relative to ``out_dir``; relative to a store's folder ``base`` (a URI): its URIs."""
    if base == out_dir:
        return rec

    def move(p: Any) -> Any:
        if not isinstance(p, str) or os.path.isabs(p) or is_remote(p):
            return p
        if isinstance(base, str):  # the store's bucket and path, then the frame's
            scheme, _, where = base.partition("://")
            return f"{scheme}://{posixpath.normpath(f'{where}/{p}')}"
        return Path(os.path.relpath(base / p, out_dir)).as_posix()

    out = dict(rec)
    if isinstance(out.get("frames"), list):
        out["frames"] = [move(p) for p in out["frames"]]
    if out.get("contact_sheet"):
        out["contact_sheet"] = move(out["contact_sheet"])
    return out
