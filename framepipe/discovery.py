"""Find the inputs among the paths a user gives: files and folders, recursively.

A file is claimed by a source kind by its extension, or, for unknown extensions, by its
first bytes (:func:`framepipe.sources.base.guess_kind`: the sources know their kinds,
discovery only walks the paths); a file named explicitly also by the extensions a kind reads
only when named (an image: a scene of one view). A folder is one input when a kind claims it
(a multi-view scene); otherwise it is walked, but for a folder a kind calls a copy of another input
(``images_4`` beside ``images``): a note. Files that no kind claims are skipped with a note, not an
error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from framepipe.errors import ConfigError
from framepipe.sources.base import get_source_class, guess_kind, path_problem, source_kinds
from framepipe.utils import as_path, natural_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Input:
    """A path and the kind that will read it."""

    path: Path
    kind: str
    error: str | None = None
    """Set when the path cannot be an input at all (e.g. a folder with no media): the
    pipeline writes a ``failed`` record with this message instead of opening it."""
    id: str | None = None
    """The manifest row's ``id``, written on its records as ``extra["id"]``."""
    questions: tuple[str, ...] | None = None
    """The manifest row's questions: asked instead of the run's (caption)."""
    start_s: float | None = None
    """Only clips (cut to) from this time on, in seconds (a manifest row's clip range)."""
    end_s: float | None = None
    """Only clips (cut to) before this time, in seconds."""
    uri: str | None = None
    """A remote input's URI (``s3://``, ``gs://``, ``https://``); ``path`` is then where it
    is staged in the local cache (by the decode stage, not by discovery)."""
    given: str | None = None
    """A local input's path as it was given, where ``path`` was made absolute for processes
    with another working directory (:func:`anchored`): what its records still name."""

    @property
    def source(self) -> str:
        """What records name as their ``source``: the URI of a remote input, else the path
        (as it was given)."""
        return self.uri or self.given or str(self.path)


OnePath: TypeAlias = str | bytes | Path
"""One file or folder path (``bytes``: a name that is not UTF-8), or a URI."""
InputPaths: TypeAlias = OnePath | Input | Iterable[OnePath | Input] | None
"""What a run's ``paths`` may be: one path or :class:`Input` (a manifest row, with its
``id``, questions and range), a list or any iterator of them, or None (none: the inputs
come from ``inputs_from`` alone)."""


def anchored(item: Input) -> Input:
    """``item`` for a process whose working directory is another (a cluster's workers: a
    temporary folder of their node): a relative local path joined to this process's working
    directory (links not followed, so that it names what the path names here), its records
    naming it as given; a remote input or an absolute path as it is."""
    if item.uri or item.path.is_absolute():
        return item
    return dataclasses.replace(item, path=Path.cwd() / item.path, given=str(item.path))


@dataclass(frozen=True)
class Skipped:
    """A path that was not taken, and why (reported as a note)."""

    path: Path
    reason: str


def discover(
    paths: OnePath | Iterable[OnePath], *, kind: str | None = None
) -> tuple[list[Input], list[Skipped]]:
    """Expand ``paths`` into inputs, in a stable (natural, sorted) order. One path (a
    ``str``, ``Path`` or ``bytes``) is one path, never a sequence of characters.

    A path named explicitly is always returned as an input when it exists and is a file,
    even when no kind claims it: the source then fails on it with a clear error and a
    ``failed`` record (the user asked for it). Inside folders, unclaimed files are skipped.
    ``kind`` forces the kind of every explicit path (and of claimed entries in folders).

    Nothing on the file system stops discovery (see :func:`path_problem`): a path that
    cannot be an input (a symbolic link loop or a broken link, a FIFO, socket or device, a
    name that cannot be listed) is an input with ``error`` set when it was named explicitly
    or its name claims a kind (a ``failed`` record, never opened), and a skip note
    otherwise. Only regular files are ever opened (to sniff their first bytes). Folders are
    followed through links, but each real folder is searched once (by device and inode), so
    a link to a folder above it is a note, not an endless walk. Names that are not valid
    UTF-8 stay as Python keeps them (surrogate escapes, :func:`os.fsdecode`), so
    ``os.fsencode(str(input.path))`` gives back the bytes of the name.
    """
    inputs: list[Input] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    searched: set[tuple[int, int]] = set()
    named: set[str] = set()  # files named explicitly: inputs, whatever a walk says of them

    def add(p: Path, k: str, error: str | None = None) -> None:
        key = _identity(p)
        if key in seen:
            return
        seen.add(key)
        inputs.append(Input(p, k, error))

    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    for raw in paths:
        p = as_path(raw, "each of paths")
        st, problem = path_problem(p)
        if problem is not None:
            k = kind or guess_kind(p, sniff=False, given=True) or "video"
            add(p, k, error=f"{p}: {problem}")
            continue
        if st is None:
            # Named explicitly: the user expects a record for it, of the kind its name says.
            add(p, kind or guess_kind(p, sniff=False, given=True) or "video")
            continue
        folder = stat.S_ISDIR(st.st_mode)
        other = None if kind is None or folder else other_kind(p, kind)
        if other is not None:  # a 3D model or a scene named with the kind video: one error
            add(p, kind or "video", error=f"{p}: {other}, not {a_kind(kind)}")
            named.add(os.path.abspath(p))
            continue
        if not stat.S_ISDIR(st.st_mode):
            k = kind or guess_kind(p, given=True) or "video"
            add(p, k)
            named.add(os.path.abspath(p))
            continue
        if kind is not None and kind != "video" and _kind_claims_dir(kind, p):
            add(p, kind)
            continue
        before = len(inputs)
        walked = _walk(p, st, kind, add, skipped, searched)
        if walked is not None and len(inputs) == before:
            add(p, kind or "video", error=f"{p}: folder holds no {wanted(kind)}")
    # an image named beside its folder is an input, though the folder's walk passed it over
    if skipped and named:
        skipped = [s for s in skipped if os.path.abspath(s.path) not in named]
    return inputs, skipped


KIND_NOUNS = {"video": "video", "multiview": "image scene", "render": "3D model"}


def wanted(kind: str | None) -> str:
    """What discovery looks for: ``video, image scene or 3D model``, or the forced kind's
    inputs (``video`` for ``framepipe shots``)."""
    if kind is None:
        return "video, image scene or 3D model"
    return KIND_NOUNS.get(kind, f"{kind} input")


def a_kind(kind: str | None, *, folder: bool = True) -> str:
    """One input of ``kind``, with its article: ``a video``, ``an image scene`` (``an
    image``: a file, not a ``folder``), ``a 3D model``."""
    what = "image" if kind == "multiview" and not folder else wanted(kind)
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


def other_kind(p: Path, kind: str) -> str | None:
    """What the file ``p``, named with the kind ``kind`` forced, is by its name when that is
    another kind (``a 3D model``, ``an image``: an extension only another kind reads), else
    None (opened as ``kind``, which says what is wrong with it). A folder is walked as
    before (a scene folder: a note, then "folder holds no video")."""
    try:  # the forced kind's module only: a path it claims imports no other kind's
        forced = get_source_class(kind)
    except ConfigError:
        return None
    if forced.claims_file(p) or forced.claims_given_file(p):
        return None
    other = guess_kind(p, sniff=False, given=True)
    return None if other in (None, kind) else a_kind(other, folder=False)


def _identity(p: Path) -> Path:
    """The key that makes two spellings of one input one input (never raises)."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return Path(os.path.abspath(p))


def _kind_claims_dir(kind: str, p: Path) -> bool:
    cls = source_kinds().get(kind)
    try:
        return bool(cls and cls.claims_dir(p))
    except OSError:
        return False


def _walk(
    root: Path,
    st: os.stat_result,
    kind: str | None,
    add: Callable[..., None],
    skipped: list[Skipped],
    searched: set[tuple[int, int]],
) -> int | None:
    """Add the inputs under the folder ``root`` (``st`` its status) and count what it
    found (inputs and notes); None when it was searched already (through a link, or named
    twice): a note, nothing added."""
    ident = (st.st_dev, st.st_ino)
    if ident in searched:
        note = "folder already searched (a link to it or to a folder above it)"
        skipped.append(Skipped(root, note))
        return None
    searched.add(ident)
    claimed = guess_kind(root) if kind is None else (kind if _kind_claims_dir(kind, root) else None)
    if claimed is not None:
        add(root, claimed)
        return 1
    other = None if kind is None else guess_kind(root)
    if other is not None:  # one input of another kind (a scene): one note, not one a file
        skipped.append(Skipped(root, f"{a_kind(other)}, not {a_kind(kind)}"))
        return 1
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: natural_key(e.name))
    except OSError as exc:
        skipped.append(Skipped(root, f"cannot list folder: {exc.strerror or exc}"))
        return 1
    found = 0
    for entry in entries:
        if entry.name.startswith("."):
            continue
        found += 1
        p = Path(entry.path)
        est, problem = path_problem(p)
        if problem is not None:
            k = guess_kind(p, sniff=False)
            if k is not None and (kind is None or k == kind):
                add(p, k, error=f"{p}: {problem}")  # looks like an input: a record
            else:
                skipped.append(Skipped(p, problem))
            continue
        if est is None:  # gone since the folder was listed
            found -= 1
            continue
        if stat.S_ISDIR(est.st_mode):
            copy = _copy_of(p, kind)
            if copy is not None:
                skipped.append(Skipped(p, copy))
                continue
            below = _walk(p, est, kind, add, skipped, searched)
            if below == 0 and _looks_like_file(p):
                skipped.append(Skipped(p, "a folder named like a media file, with nothing in it"))
            elif below == 0:
                found -= 1  # an empty folder: nothing to say
            continue
        k = guess_kind(p)
        if k is None or (kind is not None and k != kind):
            skipped.append(Skipped(p, f"not a {wanted(kind)}"))
            continue
        add(p, k)
    return found


def _copy_of(p: Path, kind: str | None) -> str | None:
    """Why a kind (the forced one, or any) passes over the folder ``p`` as a copy of
    another input (downscaled views beside a scene's images), or None."""
    for name, cls in source_kinds().items():
        if kind is None or name == kind:
            try:
                why = cls.copy_of(p)
            except OSError:
                why = None
            if why is not None:
                return why
    return None


def _looks_like_file(p: Path) -> bool:
    return any(cls.claims_file(p) for cls in source_kinds().values())
