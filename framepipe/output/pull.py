"""Outputs in an object store read here (``s3://``, ``gs://`` ... through fsspec), for
``merge``: :func:`pull_output` stages the records files of a store's output in a local folder
as they are in the store, so that the local reading rules apply to them unchanged.

A URI names a records file (its ledger, ``.NAME.inputs``, comes with it) or a folder: a
folder of part files or a ``sample`` output folder, whose records files are those a local
folder's would be (:func:`~framepipe.output.store.records_name`: ``part-*``, ``manifest.*``,
with their journals and ledgers). Each object is staged as remote inputs are
(:func:`~framepipe.inputs.remote.stage`: downloaded again only when its ETag changed) into
``<cache>/.merge/<digest of the URI>/`` and given the store's modification time, so that
files come in the order the store wrote them, as they would once downloaded; a file there
that the store no longer holds is removed. Every failure is one OutputError naming the URI.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from framepipe.errors import FramepipeError, OutputError, SourceError
from framepipe.inputs.download import every_input_problem, retrying
from framepipe.inputs.remote import (
    META_SUFFIX,
    RemoteMissing,
    cache_root,
    check_scheme,
    file_name,
    filesystem,
    remote_error,
    remote_stat,
    stage,
)
from framepipe.output.ledger import ledger_of
from framepipe.output.store import no_records_in, records_name
from framepipe.utils import stable_digest

log = logging.getLogger(__name__)


GLOB_CHARS = "*?["


def expand(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """``uri``, or the objects and folders a pattern (``s3://b/out/shard-*.jsonl``) matches,
    in name order (OutputError naming ``uri`` when none does)."""
    head, _, where = uri.partition("://")
    if not any(c in where for c in GLOB_CHARS):
        return [uri]
    check_scheme(uri, "merge inputs")
    fs, path = filesystem(uri, storage_options)
    try:
        found = sorted(retrying(lambda: fs.glob(path), uri))
    except Exception as exc:
        raise _cannot_read(uri, exc) from None
    if not found:
        raise OutputError(f"{uri}: cannot read the records (nothing in the store matches)")
    return [f"{head}://{str(p).rstrip('/')}" for p in found]


def pull_output(
    uri: str,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, str]:
    """A local copy of the output ``uri`` (a records file or a folder) and the store folder
    its records' relative frame paths are relative to. OutputError, one line naming
    ``uri``: nothing there, no access, no credentials, a folder with no records file."""
    check_scheme(uri, "merge inputs")
    fs, path = filesystem(uri, storage_options)
    folder = cache_root(cache_dir) / ".merge" / stable_digest(uri, 20)
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)  # (a listing from earlier in this process may be old)
    try:
        kind = retrying(lambda: fs.info(path), uri).get("type")
        listed = fs.ls(path, detail=False) if kind == "directory" else []
    except Exception as exc:
        raise _cannot_read(uri, exc) from None
    if kind == "directory":
        base = uri.rstrip("/")
        names = {str(p).rstrip("/").rpartition("/")[2] for p in listed}
        records = {r[0] for r in map(records_name, names) if r is not None}
        if not records:
            raise no_records_in(uri)
        wanted = [n for n in names if records_name(n) is not None]
        wanted += [ledger_of(n).name for n in records if ledger_of(n).name in names]
        objects = {f"{base}/{n}": folder / n for n in wanted}
        local = folder
    else:
        base, _, name = uri.rpartition("/")
        local = folder / file_name(uri)
        objects = {uri: local, f"{base}/{ledger_of(name).name}": ledger_of(local)}
    for obj, dest in objects.items():
        _stage(obj, dest, storage_options, required=obj == uri, named=uri)
    _prune(folder, {d.name for d in objects.values() if d.exists()})
    log.debug("%s: staged in %s", uri, folder)
    return local, base


def _stage(
    obj: str, dest: Path, options: dict[str, Any] | None, *, required: bool, named: str
) -> None:
    """Stage ``obj`` at ``dest`` with the store's modification time (a missing object is
    an error only when ``required``; its stale copy goes)."""
    try:
        stat = remote_stat(obj, options)
        stage(obj, dest, stat=stat, storage_options=options)
    except RemoteMissing:
        if required:
            raise OutputError(f"{named}: cannot read the records (no such remote object)") from None
        dest.unlink(missing_ok=True)
        return
    except FramepipeError as exc:
        why = exc.reason if isinstance(exc, SourceError) else str(exc)
        raise OutputError(f"{named}: cannot read the records ({why})") from None
    with contextlib.suppress(TypeError, ValueError, OSError):
        t = datetime.fromisoformat(str(stat.mtime)).timestamp()
        os.utime(dest, (t, t))


def _prune(folder: Path, keep: set[str]) -> None:
    """Remove from ``folder`` the records files, ledgers and their notes not in ``keep``
    (what the store no longer holds)."""
    if not folder.is_dir():
        return
    for f in folder.iterdir():
        name = f.name.removesuffix(META_SUFFIX)
        ours = records_name(name) is not None or name.endswith(".inputs")
        if f.is_file() and ours and name not in keep:
            f.unlink(missing_ok=True)


def _cannot_read(uri: str, exc: BaseException) -> OutputError:
    """One line naming ``uri`` for a failed listing of it."""
    every = every_input_problem(exc)
    if every is not None:
        return OutputError(f"{uri}: cannot read the records ({every})")
    err = remote_error(uri, exc)
    if isinstance(err, RemoteMissing):
        said = " ".join(str(exc).split())  # s3fs: "The specified bucket does not exist"
        why = "no such bucket" if "bucket" in said.lower() else "no such remote object or folder"
        return OutputError(f"{uri}: cannot read the records ({why})")
    why = err.reason if isinstance(err, SourceError) else str(err)
    return OutputError(f"{uri}: cannot read the records ({why})")
