"""Where a run's inputs come from: local paths and folders (:mod:`framepipe.discovery`),
remote URIs (:mod:`framepipe.inputs.remote`), manifests (:mod:`framepipe.inputs.manifest`),
and ``Input`` objects a program makes itself; and which of them a shard takes
(:mod:`framepipe.inputs.shard`).

:func:`collect_inputs` is the one entry the runs use. Paths given as a list are discovered
at once (a sorted, de-duplicated list, as before); a manifest, or paths given as an iterator,
give an *iterator* of inputs that is read as the engine needs them (no ``len()``). What can be
checked cheaply is checked before it returns: a manifest's ``path`` column, the fsspec
extra of the URI schemes in the arguments and in a manifest's first row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

from framepipe.discovery import Input, Skipped, discover
from framepipe.inputs.manifest import RowError, bad_row, check_manifest, manifest_rows, row_fields
from framepipe.inputs.remote import (
    UnknownScheme,
    cache_path,
    check_scheme,
    default_cache_dir,
    file_name,
    file_uri_path,
    is_remote,
    scheme_of,
    scheme_problem,
)
from framepipe.inputs.shard import Shard, parse_shard, shard_by_identity, take_shard
from framepipe.sources.base import guess_kind
from framepipe.utils import stable_digest

log = logging.getLogger(__name__)

__all__ = ["Shard", "collect_inputs", "manifest_inputs", "parse_shard", "remote_input"]

PathLike = str | Path


def remote_input(uri: str, *, kind: str | None = None, cache_dir: PathLike | None = None) -> Input:
    """The input of a remote URI: staged (later, by the decode stage) under ``cache_dir``;
    its kind from the object's extension (``video`` when none claims it)."""
    k = kind or guess_kind(Path(file_name(uri)), sniff=False) or "video"
    return Input(cache_path(uri, cache_dir), k, uri=uri)


class _RemoteRows:
    """Remote inputs of a manifest's rows, made without I/O: the cache root, the kind of an
    extension and whether a scheme has its fsspec extra are found once, not per row."""

    def __init__(self, kind: str | None, cache_dir: PathLike | None) -> None:
        self.kind = kind
        self.root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.kinds: dict[str, str] = {}
        self.schemes: dict[str, str | None] = {}

    def __call__(self, uri: str, row: dict[str, Any]) -> Input:
        name = file_name(uri)
        kind = self.kind
        if kind is None:
            ext = name.rpartition(".")[2].lower()
            if ext not in self.kinds:
                self.kinds[ext] = guess_kind(Path(name), sniff=False) or "video"
            kind = self.kinds[ext]
        scheme = scheme_of(uri) or ""
        if scheme not in self.schemes:  # checked once a scheme; the message names no URI
            problem = scheme_problem(scheme)
            self.schemes[scheme] = None if problem is None else str(problem)
        error = self.schemes[scheme]
        if error is not None:
            error = f"{uri}: {error}"
        path = self.root / stable_digest(uri, 20) / name
        return Input(path, kind, error=error, uri=uri, **row)


def manifest_inputs(
    manifest: PathLike,
    *,
    kind: str | None = None,
    cache_dir: PathLike | None = None,
    shard: Shard | None = None,
) -> Iterator[Input]:
    """The inputs a manifest lists, lazily (see :mod:`framepipe.inputs.manifest`). A local
    folder row is discovered (a scene is one input, another folder is walked); a bad row is
    an input that fails with an error naming the manifest line. With ``shard``, rows of
    other shards are dropped before anything is looked up (a row's shard is that of its
    path or URI and clip range: the inputs of a folder row stay together)."""
    root = Path(manifest).parent
    remote = _RemoteRows(kind, cache_dir)
    for where, fields in manifest_rows(manifest):
        try:
            row = row_fields(fields)
        except RowError as exc:
            bad = bad_row(where, str(exc), kind, fields.get("id"))
            if shard is None or shard.takes(bad):
                yield bad
            continue
        raw = row.pop("path")
        raw = file_uri_path(raw) or raw
        if is_remote(raw):
            source = raw
        else:
            p = Path(raw).expanduser()
            source = str(p if p.is_absolute() else root / p)
        if (
            shard is not None
            and shard_by_identity([source, row["start_s"], row["end_s"]], shard.count)
            != shard.index
        ):
            continue
        if is_remote(raw):
            yield remote(raw, row)
            continue
        if not os.path.lexists(source):  # named with its row, and where relative paths start
            hint = "" if Path(raw).expanduser().is_absolute() else f", from {root}/"
            error = f"{source}: no such file (listed at {where}{hint})"
            yield Input(Path(source), kind or "video", error=error, **row)
            continue
        found, notes = discover([Path(source)], kind=kind)
        for note in notes:
            log.info("skipping %s: %s", note.path, note.reason)
        for item in found:
            yield dataclasses.replace(item, **row)


def _first_remote_row(manifest: PathLike) -> str | None:
    for _, fields in manifest_rows(manifest):
        raw = fields.get("path")
        return raw.strip() if isinstance(raw, str) and is_remote(raw.strip()) else None
    return None


def _given(
    paths: Iterable[PathLike | Input],
    *,
    kind: str | None,
    cache_dir: PathLike | None,
    notes: list[Skipped],
    seen: set[Path] | None,
) -> Iterator[Input]:
    """The inputs of paths, URIs and ``Input`` objects, in their order; local duplicates
    are dropped when ``seen`` is a set (as discovery does)."""
    for p in paths:
        if isinstance(p, Input):
            yield p
        elif is_remote(str(p)):
            yield remote_input(str(p), kind=kind, cache_dir=cache_dir)
        else:
            found, skipped = discover([p], kind=kind)
            notes.extend(skipped)
            if seen is None:  # streamed: the notes are logged as they are found
                for note in skipped:
                    log.info("skipping %s: %s", note.path, note.reason)
            for item in found:
                if seen is not None:
                    key = item.path.resolve()
                    if key in seen:
                        continue
                    seen.add(key)
                yield item


def collect_inputs(
    paths: Iterable[PathLike | Input] = (),
    *,
    inputs_from: PathLike | Iterable[PathLike] | None = None,
    kind: str | None = None,
    cache_dir: PathLike | None = None,
    shard: Shard | str | tuple[int, int] | None = None,
) -> tuple[list[Input] | Iterator[Input], list[Skipped]]:
    """The inputs of a run and the notes about paths not taken.

    ``paths``: local paths and folders, remote URIs, or ``Input`` objects; ``inputs_from``:
    one manifest or several. The inputs are a list when ``paths`` is a list (or tuple) and
    there is no manifest; an iterator otherwise (streamed: its notes are only logged).
    ``shard`` (``"I/N"``) keeps only that shard's inputs. Raises a one-line error before any
    heavy work for a manifest without a ``path`` column or a URI scheme whose fsspec extra is
    not installed.
    """
    sh = parse_shard(shard)
    if inputs_from is None:
        manifests: list[PathLike] = []
    elif isinstance(inputs_from, (str, os.PathLike)):
        manifests = [inputs_from]
    else:
        manifests = list(inputs_from)
    for m in manifests:
        check_manifest(m)
        first = _first_remote_row(m)
        if first is not None:
            with contextlib.suppress(UnknownScheme):  # a typo in a row: that row's record
                check_scheme(first)
    notes: list[Skipped] = []
    if isinstance(paths, Sized) and not isinstance(paths, (str, bytes, os.PathLike)):
        given: list[PathLike | Input] = list(paths)
        for p in given:
            if not isinstance(p, Input) and is_remote(str(p)):
                check_scheme(str(p))
        local = [p for p in given if not isinstance(p, Input) and not is_remote(str(p))]
        if len(local) == len(given):
            found, notes = discover(local, kind=kind)  # exactly as before
        else:
            found = list(_given(given, kind=kind, cache_dir=cache_dir, notes=notes, seen=set()))
        for note in notes:
            log.info("skipping %s: %s", note.path, note.reason)
        if not manifests:
            return list(take_shard(found, sh)), notes
        head: Iterable[Input] = found
    else:
        single = [paths] if isinstance(paths, (str, bytes, os.PathLike)) else paths
        head = _given(single, kind=kind, cache_dir=cache_dir, notes=notes, seen=None)
    streams = [manifest_inputs(m, kind=kind, cache_dir=cache_dir, shard=sh) for m in manifests]
    return itertools.chain(take_shard(head, sh), *streams), notes


def peek_kinds(
    inputs: list[Input] | Iterator[Input],
) -> tuple[list[str], list[Input] | Iterator[Input]]:
    """The kinds to check a run's settings against before heavy work, and the inputs to run
    (the same: a streamed one has its first input read and put back). A list gives all its
    kinds; a stream the first input's kind (a later one is checked as it is read). No kinds:
    no input."""
    if isinstance(inputs, list):
        return sorted({i.kind for i in inputs}), inputs
    first = next(inputs, None)
    if first is None:
        return [], inputs
    return [first.kind], itertools.chain([first], inputs)
