"""Outputs in an object store (``s3://``, ``gs://`` ... through fsspec), published whole.

A run whose records file is a URI writes where it runs, into a staging folder of part files
(``<cache>/.outputs/<digest of the URI>/``): ``part-published.<format>``, the store's copy
of the output (with its ledger), and this run's own part. At the end, :meth:`RemoteOutput.
publish` merges them (one record per clip, :func:`~framepipe.output.store.merge`) and puts
the result in the store under a temporary key beside the output, then moves it into place:
a reader never sees half a file. The old ledger goes before the records move and the new one
comes after them (as :func:`~framepipe.output.merge.merge` does in a folder): a driver
stopped between leaves records with no ledger, all kept, never a ledger whose newer plans
drop the records of an input's earlier version while its new records are not there. A
resume reads its state from the store (the copy is downloaded again only when the object's
ETag changed) and from the parts of a run on this machine that was killed before it could
publish. A publish first downloads the store's copy again if it changed since the run began
(two drivers on one URI, shards of one folder: each one's records stay), but two publishing
at the same instant may still keep only the last one's: give shards outputs of their own.

Frames go to the store from where they are decoded (:func:`save_image`), straight to their
final keys: each is one object, whole or absent.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from framepipe.errors import ConfigError, FramepipeError, OutputError
from framepipe.inputs.remote import (
    RemoteMissing,
    cache_root,
    check_scheme,
    filesystem,
    is_remote,
    remember,
    remote_stat,
    scheme_of,
    stage,
)
from framepipe.output.ledger import ledger_of
from framepipe.output.merge import NothingToMerge, merge
from framepipe.output.store import format_of, part_path, record_files
from framepipe.utils import stable_digest

PUBLISHED = "published"
"""The part name of the store's copy in the staging folder."""


def join(folder: str | os.PathLike[str], name: str) -> str:
    """``folder/name`` for a local folder or a URI."""
    return (
        f"{str(folder).rstrip('/')}/{name}" if is_remote(str(folder)) else str(Path(folder) / name)
    )


def relative(target: str, base: str | os.PathLike[str]) -> str:
    """``target`` relative to the folder ``base`` where both are local, or both in one bucket
    of one store; else ``target`` as it is (absolute)."""
    t, b = urlsplit(target), urlsplit(str(base))
    if is_remote(target) != is_remote(str(base)) or (t.scheme, t.netloc) != (b.scheme, b.netloc):
        return target
    if not is_remote(target):
        return os.path.relpath(target, base)
    return posixpath.relpath(t.path or "/", b.path or "/")


def save_image(
    img: Any, target: str, storage_options: dict[str, Any] | None = None, **kw: Any
) -> None:
    """Save the PIL image ``img`` at ``target``: a local path (its folder made), or a URI
    (one object, written whole). ``kw``: PIL's ``save`` options (``format``, ``quality``)."""
    if not is_remote(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        img.save(target, **kw)
        return
    buf = io.BytesIO()
    img.save(buf, **kw)
    fs, path = filesystem(target, storage_options)
    fs.pipe_file(path, buf.getvalue())


def check_store(
    uri: str, storage_options: dict[str, Any] | None = None, what: str = "output"
) -> None:
    """Before any work (``uri``: a file, or a folder ending with ``/``): a one-line
    MissingDependencyError or ConfigError for a scheme that cannot be used here or cannot be
    written (``http(s)://``), OutputError unless a small object can be written and removed
    beside ``uri`` (the bucket is there, the credentials may write)."""
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        raise ConfigError(
            f"{uri}: {scheme}:// cannot be written: an output goes to a folder or an object "
            "store (s3://, gs://, ...)"
        )
    check_scheme(uri, "outputs")
    fs, path = filesystem(uri, storage_options)
    folder = path.rstrip("/") if uri.endswith("/") else posixpath.dirname(path)
    probe = f"{folder}/.framepipe-check-{uuid.uuid4().hex[:12]}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm(probe)
    except Exception as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise OutputError(f"{uri}: cannot write the {what} ({why})") from None


class RemoteOutput:
    """The records file ``uri`` in a store, written through a local staging folder."""

    def __init__(
        self,
        uri: str,
        format: str | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.uri = uri
        self.format = format_of(urlsplit(uri).path, format)
        self.storage_options = storage_options
        self.folder = cache_root(cache_dir) / ".outputs" / stable_digest(uri, 20)
        """The staging folder (a folder output of part files)."""
        self.published = part_path(self.folder, PUBLISHED, self.format)
        self.overwrite = False
        """Whether the run starts afresh (:meth:`fetch`): the store's records are replaced."""

    def ledger_uri(self) -> str:
        head, _, name = self.uri.rpartition("/")
        return f"{head}/.{name}.inputs"

    def fetch(self, *, overwrite: bool = False) -> Path:
        """The staging folder, holding the store's copy of the output and of its ledger
        (OutputError, one line, when the store cannot be reached)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite
        if overwrite:
            for p in record_files(self.folder):
                for f in (p, ledger_of(p)):
                    f.unlink(missing_ok=True)
            return self.folder
        for uri, dest in (
            (self.ledger_uri(), ledger_of(self.published)),
            (self.uri, self.published),
        ):
            try:
                stage(
                    uri,
                    dest,
                    stat=remote_stat(uri, self.storage_options),
                    storage_options=self.storage_options,
                )
            except RemoteMissing:
                dest.unlink(missing_ok=True)
            except FramepipeError as exc:
                raise OutputError(f"{self.uri}: cannot read the output's state ({exc})") from None
            else:
                os.utime(dest, ns=(0, 0))  # older than any part written here
        return self.folder

    def publish(self) -> None:
        """Merge the staging folder and put it in place in the store (see the module)."""
        files = record_files(self.folder)
        if all(f == self.published for f in files):
            return  # nothing new to publish
        if not self.overwrite:  # the store's copy again if it changed since (another driver)
            self.fetch()
        merged = self.folder / f".merging.{self.format}"
        try:
            merge([self.folder], merged, self.format)
        except NothingToMerge:
            return  # a run that wrote no record (and none was there)
        fs, path = filesystem(self.uri, self.storage_options)
        ledger = filesystem(self.ledger_uri(), self.storage_options)[1]
        new_ledger = ledger_of(merged).exists()
        uploads = [(merged, path)] + ([(ledger_of(merged), ledger)] if new_ledger else [])
        try:
            _publish(fs, uploads, ledger)
        except Exception as exc:
            raise OutputError(
                f"{self.uri}: cannot publish ({' '.join(str(exc).split())})"
            ) from None
        for f in files:  # what is published is now the store's copy here
            if f != self.published:
                f.unlink(missing_ok=True)
                ledger_of(f).unlink(missing_ok=True)
        os.replace(merged, self.published)
        if ledger_of(merged).exists():
            os.replace(ledger_of(merged), ledger_of(self.published))
        os.utime(self.published, ns=(0, 0))
        with contextlib.suppress(FramepipeError):
            remember(self.published, remote_stat(self.uri, self.storage_options))
            remember(
                ledger_of(self.published), remote_stat(self.ledger_uri(), self.storage_options)
            )


def _publish(fs: Any, uploads: list[tuple[Path, str]], ledger: str) -> None:
    """Put each ``(local file, key)`` of ``uploads`` (the records, then their ledger, if
    any) in place, replacing the ledger ``ledger``. Each is uploaded under a temporary key
    beside its own first; then, as merge does in a folder, the old ledger goes before the
    records move and the new one comes after them: stopped between (a kill, a store gone),
    the store's records stand with no ledger (every one kept, a resume reopens the
    inputs), never under a ledger whose plans supersede records the store does not hold
    yet. A temporary key is the same on every publish (one driver per output): one left by
    a driver killed before its move is replaced and moved by the next publish, never one
    more stray object per kill; on an error they are removed."""
    moves: list[tuple[str, str]] = []
    try:
        for local, path in uploads:
            head, _, name = path.rpartition("/")
            moves.append((f"{head}/.{name.lstrip('.')}.publishing.tmp", path))
            fs.put_file(str(local), moves[-1][0])
        with contextlib.suppress(FileNotFoundError):
            fs.rm(ledger)
        for tmp, path in moves:
            fs.mv(tmp, path)
    except BaseException:
        for tmp, _ in moves:
            with contextlib.suppress(Exception):
                fs.rm(tmp)
        raise
