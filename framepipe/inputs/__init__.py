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

from framepipe.discovery import Input, InputPaths, OnePath, Skipped, discover
from framepipe.inputs.manifest import (
    MANIFEST_SUFFIXES,
    RowError,
    bad_row,
    check_manifest,
    manifest_rows,
    row_fields,
    windows_spelling,
)
from framepipe.inputs.remote import (
    FILE_HOST,
    UnknownScheme,
    cache_path,
    cache_root,
    check_scheme,
    file_name,
    file_uri_path,
    is_remote,
    scheme_of,
    scheme_problem,
)
from framepipe.inputs.shard import Shard, parse_shard, take_shard
from framepipe.inputs.unique import DefaultQuestions, Taken
from framepipe.sources.base import guess_kind, kind_of_name, source_kinds
from framepipe.utils import in_memory_note, stable_digest

log = logging.getLogger(__name__)

__all__ = [
    "DefaultQuestions",
    "Shard",
    "collect_inputs",
    "manifest_inputs",
    "parse_shard",
    "possible_kinds",
    "remote_input",
    "staged_kind",
]

PathLike = str | Path


def remote_input(uri: str, *, kind: str | None = None, cache_dir: PathLike | None = None) -> Input:
    """The input of a remote URI: staged (later, by the decode stage) under ``cache_dir``;
    its kind from the object's extension (``video`` when none claims it)."""
    k = kind or kind_of_name(file_name(uri)) or "video"
    return Input(cache_path(uri, cache_dir), k, uri=uri)


def _kind_unnamed(item: Input, forced: str | None) -> bool:
    """Whether ``item`` is a remote input whose kind neither the run (``forced``) nor the
    object's name gives (``video`` only by default)."""
    if not item.uri or forced is not None:
        return False
    return kind_of_name(file_name(item.uri)) is None


def staged_kind(item: Input, local: Path, forced: str | None = None) -> str:
    """The kind that reads ``item`` from ``local``, its staged copy: the kind the run was
    told (``forced``) or the object's name claims, else the one the copy's first bytes say
    (an image URL without an image extension, ``https://host/photo``: a scene of one view,
    as a local file named so is), else ``item.kind``. Decided in the read stage, once the
    object is here: discovery of remote inputs does no I/O."""
    if not _kind_unnamed(item, forced):
        return item.kind
    return guess_kind(local, given=True) or item.kind


def possible_kinds(item: Input, forced: str | None = None) -> list[str]:
    """The kinds that may read ``item``, to check a run's settings against before any input
    is read: its own, or every kind for a remote input whose kind its first bytes decide
    (:func:`staged_kind`)."""
    return list(source_kinds()) if _kind_unnamed(item, forced) else [item.kind]


class _RemoteRows:
    """Remote inputs of a manifest's rows, made without I/O: the cache root, the kind of an
    extension and whether a scheme has its fsspec extra are found once, not per row."""

    def __init__(self, kind: str | None, cache_dir: PathLike | None) -> None:
        self.kind = kind
        self.root = cache_root(cache_dir)
        self.kinds: dict[str, str] = {}
        self.schemes: dict[str, str | None] = {}

    def __call__(self, uri: str, row: dict[str, Any]) -> Input:
        name = file_name(uri)
        kind = self.kind
        if kind is None:
            ext = name.rpartition(".")[2].lower()
            if ext not in self.kinds:
                self.kinds[ext] = kind_of_name(name) or "video"
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
    taken: Taken | None = None,
) -> Iterator[Input]:
    """The inputs a manifest lists, lazily (see :mod:`framepipe.inputs.manifest`). A local
    folder row is discovered (a scene is one input, another folder is walked); a bad row is
    an input that fails with an error naming the manifest line. An input taken already (in
    ``taken``: by an earlier row, or before the manifest) is dropped, and the number
    dropped logged once the manifest is read (see :mod:`framepipe.inputs.unique`). With
    ``shard``, only that shard's inputs are kept: an input's shard is that of the file it
    resolves to (see :mod:`framepipe.inputs.shard`), so the files of a folder row are
    split like the others, and a file listed in two ways (a folder row and a row of its
    own) is in one shard. A remote row of another shard is dropped before anything is
    looked up (its URI is its place); a local row is found first."""
    taken = Taken() if taken is None else taken
    dropped = 0
    for item in _manifest_inputs(manifest, kind, cache_dir, shard):
        if taken.first(item):
            if shard is None or shard.takes(item):
                yield item
        else:
            dropped += 1
    if dropped:
        log.warning(
            "%s: %d duplicate(s) dropped (the same file or URI, id, clip range and "
            "questions as an input listed before): each input is read once",
            manifest,
            dropped,
        )


def _manifest_inputs(
    manifest: PathLike, kind: str | None, cache_dir: PathLike | None, shard: Shard | None
) -> Iterator[Input]:
    root = Path(manifest).parent
    remote = _RemoteRows(kind, cache_dir)
    for where, fields in manifest_rows(manifest):
        try:
            row = row_fields(fields)
        except RowError as exc:
            yield bad_row(where, str(exc), kind, fields.get("id"))
            continue
        raw = row.pop("path")
        if scheme_of(raw) == "file" and file_uri_path(raw) is None:
            yield bad_row(where, f"{raw}: {FILE_HOST}", kind, row["id"])
            continue
        raw = file_uri_path(raw) or raw
        if is_remote(raw):
            if shard is None or shard.takes_place(raw, row["start_s"], row["end_s"]):
                yield remote(raw, row)
            continue
        p = Path(raw).expanduser()
        source = str(p if p.is_absolute() else root / p)
        other = None if os.path.lexists(source) else windows_spelling(source)
        if other is not None and os.path.lexists(other):
            source = other
        elif not os.path.lexists(source):  # named with its row, and where relative paths start
            hint = "" if Path(raw).expanduser().is_absolute() else f", from {root}/"
            error = f"{source}: no such file (listed at {where}{hint})"
            yield Input(Path(source), kind or "video", error=error, **row)
            continue
        if kind is None and _a_manifest(Path(source)):  # itself, often: a clear error
            error = f"{source}: a manifest, not an input (listed at {where}); manifests list inputs"
            yield Input(Path(source), "video", error=error, **row)
            continue
        found, notes = discover([Path(source)], kind=kind)
        for note in notes:
            log.info("skipping %s: %s", note.path, note.reason)
        for item in found:
            yield dataclasses.replace(item, **row)


def _a_manifest(p: Path) -> bool:
    """Whether ``p`` is a file named as a manifest that no source kind reads."""
    return p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file() and guess_kind(p) is None


def _first_remote_row(manifest: PathLike) -> str | None:
    for _, fields in manifest_rows(manifest):
        raw = fields.get("path")
        return raw.strip() if isinstance(raw, str) and is_remote(raw.strip()) else None
    return None


def _file_uri(p: OnePath | Input, kind: str | None) -> OnePath | Input:
    """``p``, a ``file://`` URI given as a string read as the local path it names
    (percent-escapes decoded); one with another host is an input that fails saying so."""
    if not isinstance(p, str) or scheme_of(p) != "file":
        return p
    local = file_uri_path(p)
    if local is None:
        return Input(Path(p), kind or "video", error=f"{p}: {FILE_HOST}", uri=p)  # named as given
    return local


def _given(
    paths: Iterable[OnePath | Input],
    *,
    kind: str | None,
    cache_dir: PathLike | None,
    notes: list[Skipped],
    taken: Taken,
    streamed: bool,
) -> Iterator[Input]:
    """The inputs of paths, URIs and ``Input`` objects, in their order, each once (see
    :mod:`framepipe.inputs.unique`); ``streamed``: the notes are logged as they are found."""
    for given in paths:
        p = _file_uri(given, kind)
        if isinstance(p, Input):
            found = [p]
        elif is_remote(str(p)):
            found = [remote_input(str(p), kind=kind, cache_dir=cache_dir)]
        else:
            found, skipped = discover([p], kind=kind)
            notes.extend(skipped)
            if streamed:
                for note in skipped:
                    log.info("skipping %s: %s", note.path, note.reason)
        for item in found:
            if taken.first(item):
                yield item
            else:
                log.info("%s: given more than once, read once", item.source)


def collect_inputs(
    paths: InputPaths = (),
    *,
    inputs_from: PathLike | Iterable[PathLike] | None = None,
    kind: str | None = None,
    cache_dir: PathLike | None = None,
    shard: Shard | str | tuple[int, int] | None = None,
    default_questions: DefaultQuestions | None = None,
) -> tuple[list[Input] | Iterator[Input], list[Skipped]]:
    """The inputs of a run and the notes about paths not taken.

    ``paths``: local paths and folders (a ``file://`` URI names one), remote URIs, or
    ``Input`` objects; ``inputs_from``: one manifest or several. The inputs are a list when
    ``paths`` is a list (or tuple) and there is no manifest; an iterator otherwise
    (streamed: its notes are only logged). An input given twice (two spellings of one
    file, a folder and a file in it, a manifest row repeated or naming a path given too) is
    one input; so are two rows of one file, one with no questions and one with the
    ``default_questions(kind)`` of the run (``caption``: what it asks when a row has none).
    ``shard`` (``"I/N"``) keeps only that shard's inputs, found and de-duplicated first
    (an input's shard is that of the file it resolves to). Raises a one-line
    error before any heavy work for a manifest without a ``path`` column or a URI scheme
    whose fsspec extra is not installed.
    """
    if paths is None:  # only a manifest: sample(None, out, inputs_from="rows.jsonl")
        paths = ()
    elif isinstance(paths, Input):
        paths = [paths]
    elif not isinstance(paths, (str, bytes, os.PathLike, Iterable)) or in_memory_note(paths):
        raise TypeError(
            f"paths must be a path, a URI, an Input or a list of them, not "
            f"{type(paths).__name__}{in_memory_note(paths)}"
        )
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
    taken = Taken(default_questions)
    if isinstance(paths, Sized) and not isinstance(paths, (str, bytes, os.PathLike)):
        given = [_file_uri(p, kind) for p in paths]
        for p in given:
            if not isinstance(p, Input) and is_remote(str(p)):
                check_scheme(str(p))
        local = [p for p in given if not isinstance(p, Input) and not is_remote(str(p))]
        if len(local) == len(given):
            found, notes = discover(local, kind=kind)  # each file once, as before
            found = [item for item in found if taken.first(item)]
        else:
            found = list(
                _given(
                    given, kind=kind, cache_dir=cache_dir, notes=notes, taken=taken, streamed=False
                )
            )
        for note in notes:
            log.info("skipping %s: %s", note.path, note.reason)
        if not manifests:
            return list(take_shard(found, sh)), notes
        head: Iterable[Input] = found
    else:
        single = [paths] if isinstance(paths, (str, bytes, os.PathLike)) else paths
        head = _given(
            single, kind=kind, cache_dir=cache_dir, notes=notes, taken=taken, streamed=True
        )
    streams = [
        manifest_inputs(m, kind=kind, cache_dir=cache_dir, shard=sh, taken=taken) for m in manifests
    ]
    return itertools.chain(take_shard(head, sh), *streams), notes


def peek_kinds(
    inputs: list[Input] | Iterator[Input],
) -> tuple[list[str], list[Input] | Iterator[Input]]:
    """The kinds to check a run's settings against before heavy work, and the inputs to run
    (the same: a streamed one has its first input read and put back). A list gives all its
    kinds; a stream the first input's kind (a later one is checked as it is read). No kinds:
    no input."""
    if isinstance(inputs, list):
        return sorted({k for i in inputs for k in possible_kinds(i)}), inputs
    first = next(inputs, None)
    if first is None:
        return [], inputs
    return possible_kinds(first), itertools.chain([first], inputs)
