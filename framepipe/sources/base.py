"""The Source interface and the registry of source kinds.

A source opens cheaply, reports :class:`~framepipe.types.SourceInfo` (metadata only),
hands the stages above it the cheap signals they need (tiny frames for shot detection and
thumbnails, :meth:`Source.read_signal`) and reads exactly the indices it is asked for. The
stages above (shots, samplers) never open a file themselves. Heavy libraries are imported
inside the source that needs them, so a missing backend makes that kind unavailable
instead of breaking ``import framepipe``.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framepipe.errors import ConfigError, DecodeError, UnsupportedInputError, did_you_mean
from framepipe.registry import Registry, run_check
from framepipe.types import (
    FrameBatch,
    SkipMode,
    SmallFrames,
    SourceInfo,
    VisibleSurface,
    rgb_to_yuv,
)
from framepipe.utils import Closing, as_path

log = logging.getLogger(__name__)


class Source(Closing, ABC):
    """One input (a video file, a scene folder, a 3D model file).

    Subclasses set ``kind`` and implement :meth:`info` and :meth:`read`; :meth:`read_small`,
    :meth:`read_signal` and :meth:`read_signal_ranges` have defaults built on :meth:`read`
    that kinds with a cheaper path override; :meth:`visible_surface` only where there is a
    surface to measure.
    Sources are context managers; :meth:`close` releases file handles and decoders.
    """

    kind: ClassVar[str] = ""
    extensions: ClassVar[frozenset[str]] = frozenset()
    """Lower-case file suffixes (with the dot) this kind claims, for discovery."""

    def __init__(self, path: str | Path, **options: Any) -> None:
        """Check the options (a one-line ConfigError naming a bad one) and open nothing: the
        file is opened by :meth:`info` (so :func:`check_source_options` can make a kind on
        no file to check a run's options before any input is read). A kind that names its
        options hands the others here: they are other kinds' (a run's options are shared by
        every kind of its inputs), noted at debug level, not an error."""
        self.path = Path(path)
        self.options = options
        if options and self.option_names() is not None:
            log.debug("%s: ignoring source option(s) %s", path, sorted(options))

    @classmethod
    def option_names(cls) -> frozenset[str] | None:
        """The source options this kind takes: its constructor's keyword parameters; None
        when it names none (it takes any)."""
        keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = inspect.signature(cls.__init__).parameters.values()
        names = {p.name for p in params if p.kind in keyword} - {"self", "path"}
        return frozenset(names) or None

    # -- discovery ------------------------------------------------------------------------
    @classmethod
    def claims_file(cls, path: Path) -> bool:
        """Whether this kind reads the file ``path`` (by extension; cheap)."""
        return path.suffix.lower() in cls.extensions

    @classmethod
    def claims_given_file(cls, path: Path) -> bool:
        """Whether this kind reads the file ``path`` when a user names it (by extension;
        cheap), though no kind claims it in a folder (a single image: a one-view scene)."""
        return False

    @classmethod
    def sniff_file(cls, path: Path, head: bytes) -> bool:
        """Whether the first bytes of a file with an unknown extension look like this kind."""
        return False

    @classmethod
    def sniff_given_file(cls, path: Path, head: bytes) -> bool:
        """Whether the first bytes of a file a user names, with an unknown extension, look
        like this kind, though no kind claims such a file in a folder (an image)."""
        return False

    @classmethod
    def claims_dir(cls, path: Path) -> bool:
        """Whether the folder ``path`` is itself one input of this kind (e.g. a scene)."""
        return False

    @classmethod
    def copy_of(cls, path: Path) -> str | None:
        """Why the folder ``path``, met while searching a folder, is a copy of another
        input of this kind that discovery passes over (a note), or None."""
        return None

    # -- reading --------------------------------------------------------------------------
    @abstractmethod
    def info(self) -> SourceInfo:
        """Metadata only; cached by implementations (called often)."""

    @abstractmethod
    def read(self, indices: Sequence[int]) -> FrameBatch:
        """Decode exactly ``indices`` (any order, repeats allowed), in the order given."""

    def read_small(
        self,
        start: int,
        end: int,
        *,
        size: tuple[int, int] = (64, 36),
        step: int = 1,
    ) -> np.ndarray:
        """Frames ``start, start+step, ... < end`` at reduced size ``(width, height)``.

        Returns a uint8 array N x height x width x 3 (RGB); the range is cut to the frames
        the source has (see :func:`small_request`). This is the cheap signal that the n-view
        sampler and :meth:`read_signal` use; kinds give it a faster path by overriding
        :meth:`_read_small`.
        """
        idx, (w, h) = small_request(start, end, size, step, self.info().num_frames)
        if not idx:
            return np.empty((0, h, w, 3), dtype=np.uint8)
        return self._read_small(idx, (w, h))

    def _read_small(self, indices: list[int], size: tuple[int, int]) -> np.ndarray:
        """Frames ``indices`` (checked: in range, at least one) at ``size`` = (width, height);
        this default reads them whole and scales them down."""
        from PIL import Image

        out = np.empty((len(indices), size[1], size[0], 3), dtype=np.uint8)
        for k, f in enumerate(self.read(indices).images()):
            out[k] = np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))
        return out

    def read_signal(
        self,
        start: int,
        end: int,
        *,
        size: tuple[int, int] = (64, 36),
        skip: SkipMode = "nonref",
    ) -> SmallFrames:
        """Frames of ``[start, end)`` at ``size`` (width, height) as limited-range YUV: the
        cheap signal that shot detection reads.

        ``skip`` lets a kind with a fast decoder drop frames (those nothing refers to for
        ``nonref``, every B-frame for ``bidir``; the
        indices of the frames it kept come with them). Kinds give it their fast path by
        overriding :meth:`_read_signal`.
        """
        n = self.info().num_frames
        if not 0 <= start < end <= n:
            raise DecodeError(self.path, f"signal range [{start}, {end}) outside 0..{n}")
        return self._read_signal(start, end, (int(size[0]), int(size[1])), skip)

    def _read_signal(
        self, start: int, end: int, size: tuple[int, int], skip: SkipMode
    ) -> SmallFrames:
        """The signal of a checked range; this default, built on :meth:`read_small`, returns
        every frame of it."""
        small = rgb_to_yuv(self.read_small(start, end, size=size))
        return SmallFrames(np.arange(start, end, dtype=np.int64), small)

    def read_signal_ranges(
        self, ranges: Sequence[tuple[int, int]], *, size: tuple[int, int] = (64, 36)
    ) -> SmallFrames:
        """Every frame of each ``[a, b)`` in ``ranges`` (cut to the source), like
        :meth:`read_signal`: the few short ranges around candidate cuts that shot detection
        looks at frame by frame."""
        n = self.info().num_frames
        wanted = sorted({i for a, b in ranges for i in range(max(0, int(a)), min(n, int(b)))})
        runs: list[list[int]] = []
        for i in wanted:
            if runs and i == runs[-1][-1] + 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        parts = [self.read_small(r[0], r[-1] + 1, size=size) for r in runs]
        frames = np.concatenate(parts) if parts else np.zeros((0, size[1], size[0], 3), np.uint8)
        return SmallFrames(np.asarray(wanted, dtype=np.int64), rgb_to_yuv(frames))

    def visible_surface(self, *, resolution: int = 64, voxels: int = 32) -> VisibleSurface | None:
        """What each view sees of the surface of a 3D model (:class:`VisibleSurface`), for
        the n-view sampler's surface coverage; None for kinds with no surface to measure
        (videos, photographed scenes). The render source measures it."""
        return None

    def close(self) -> None:
        """Release resources; safe to call twice."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


def small_request(
    start: int, end: int, size: tuple[int, int], step: int, count: int
) -> tuple[list[int], tuple[int, int]]:
    """The one check of :meth:`Source.read_small`'s arguments, for every kind: the indices
    ``start, start+step, ... < end`` cut to ``0 .. count-1``, and ``(width, height)``.
    ``step`` and ``size`` below 1 are a :class:`ValueError`."""
    if step < 1:
        raise ValueError(f"step ({step}) must be >= 1")
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"size {size} must be positive")
    return list(range(max(0, start), min(end, count), step)), (w, h)


def frame_indices(indices: Iterable[Any], path: str | Path) -> list[int]:
    """The one conversion of :meth:`Source.read`'s indices, for every kind: integers of any
    type (numpy's too) as ints. A float (``np.linspace`` without rounding), a bool or text
    is a :class:`TypeError` naming it, never cut down to a frame nobody asked for."""
    out = []
    for i in indices:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            shown = repr(i.item() if isinstance(i, np.generic) else i)  # 0.5, not np.float64(0.5)
            raise TypeError(
                f"{path}: frame indices must be integers, got {shown} ({type(i).__name__})"
            )
        out.append(int(i))
    return out


SOURCES: Registry[type[Source]] = Registry(
    "source kind",
    {
        "video": "framepipe.sources.video.source",
        "multiview": "framepipe.sources.multiview.source",
        "render": "framepipe.sources.render.source",
    },
    entry_point_group="framepipe.sources",
)
"""Source kinds by name; a kind whose library is missing is unavailable, with the reason."""


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make ``cls`` available under ``cls.kind``."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    SOURCES.register(cls.kind, cls)
    return cls


def mark_unavailable(kind: str, reason: str) -> None:
    """Record that a kind exists but cannot be used here (missing library)."""
    SOURCES.mark_unavailable(kind, reason)


def source_kinds() -> dict[str, type[Source]]:
    """Available kinds, built-ins first (video, multiview, render), then plug-ins."""
    return dict(SOURCES.items())


_SNIFF_BYTES = 64


def guess_kind(path: Path, *, sniff: bool = True, given: bool = False) -> str | None:
    """The kind that reads ``path``, or None. Folders: only if a kind claims the folder.
    Files: by extension, then (``given``: a path the user named, not one met in a folder)
    by the extensions kinds read only when named (:meth:`Source.claims_given_file`), then
    (``sniff``) by their first bytes (``given``: also as kinds read them only when named).

    Only a regular file is ever opened to sniff (never a FIFO, socket or device, which
    could block or never end), and a path that cannot be examined (a link loop) is simply
    not claimed: this never raises for a bad path.
    """
    kinds = source_kinds()
    try:
        st: os.stat_result | None = os.stat(path)
    except (OSError, ValueError):
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        for kind, cls in kinds.items():
            try:
                if cls.claims_dir(path):
                    return kind
            except OSError as exc:  # e.g. a link loop inside the folder
                log.debug("%s: %s cannot examine the folder (%s)", path, kind, exc)
        return None
    named = kind_of_name(path, given=given)
    if named is not None:
        return named
    if sniff and st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0:
        head = _read_head(path)
        for kind, cls in kinds.items():
            if head and cls.sniff_file(path, head):
                return kind
        for kind, cls in kinds.items():
            if head and given and cls.sniff_given_file(path, head):
                return kind
    return None


def kind_of_name(name: str | Path, *, given: bool = True) -> str | None:
    """The kind that reads a file named ``name`` by its extension, or None: the name alone
    (a remote object's: nothing here is looked at). ``given``: as a file a user names (an
    image: a one-view scene), not one met in a folder."""
    path, kinds = Path(name), source_kinds()
    for kind, cls in kinds.items():
        if cls.claims_file(path):
            return kind
    for kind, cls in kinds.items():
        if given and cls.claims_given_file(path):
            return kind
    return None


def _read_head(path: Path) -> bytes:
    """The first bytes of the regular file ``path`` (empty if it cannot be read or is not a
    regular file any more: opened non-blocking, so a FIFO put in its place cannot hang)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError):
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, _SNIFF_BYTES)
    except OSError:
        return b""
    finally:
        os.close(fd)


_NOT_REGULAR = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def path_problem(p: Path) -> tuple[os.stat_result | None, str | None]:
    """``p``'s status (links followed) and why it cannot be an input, without opening it.

    ``(stat, None)`` for a regular file or a folder; ``(None, None)`` when nothing is at
    ``p`` (the source reports a missing file); ``(stat or None, reason)`` for a symbolic
    link loop, a broken link, a FIFO, socket or device (``"not a regular file (FIFO)"``),
    a file this process may not read, or a path that cannot be examined.
    """
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "symbolic link loop (too many levels of symbolic links)"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(p):
                return None, "broken symbolic link (its target does not exist)"
            return None, None
        return None, f"cannot examine ({exc.strerror or exc})"
    except ValueError as exc:  # e.g. a NUL byte in the name
        return None, f"cannot examine ({exc})"
    if stat.S_ISREG(st.st_mode) and not os.access(p, os.R_OK):
        return st, "cannot read (permission denied)"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return st, None
    what = _NOT_REGULAR.get(stat.S_IFMT(st.st_mode), "special file")
    return st, f"not a regular file ({what})"


def check_source_options(options: Mapping[str, Any], kinds: Iterable[str] | None = None) -> None:
    """ConfigError (one line) for a source option that none of ``kinds`` (default: every
    available kind) takes, or whose value a kind that takes it refuses: each kind is made
    on no file with its own options (constructors check them and open nothing). Called
    before any input is opened. A kind that names no option, or cannot be used here, is
    not held against an option."""
    names = list(dict.fromkeys(SOURCES.names() if kinds is None else kinds))
    if not options or not names:
        return
    takes: dict[str, frozenset[str] | None] = {
        k: SOURCES.get(k).option_names() if k in SOURCES else None for k in names
    }
    for kind, accepts in takes.items():
        own = {k: v for k, v in options.items() if accepts is not None and k in accepts}
        if own:  # a kind's constructor checks its options (and opens nothing)
            run_check(SOURCES.family, kind, _make_and_close, SOURCES.get(kind), **own)
    if any(accepts is None for accepts in takes.values()):
        return
    unknown = sorted(set(options).difference(*(a or () for a in takes.values())))
    if unknown:
        known = "; ".join(f"{k}: {', '.join(sorted(a or ()))}" for k, a in takes.items())
        raise ConfigError(
            f"unknown source option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} for {' or '.join(names)} inputs ({known})"
            + did_you_mean(unknown, set().union(*(a or () for a in takes.values())))
        )


def _make_and_close(cls: type[Source], **options: Any) -> None:
    cls(Path(os.devnull), **options).close()


def get_source_class(kind: str) -> type[Source]:
    """The class of ``kind``; a one-line ConfigError when unknown or unavailable here."""
    return SOURCES.get(kind)


def open_source(path: str | Path, kind: str | None = None, **options: Any) -> Source:
    """Open ``path`` as ``kind`` (guessed from the path when None)."""
    p = as_path(path)
    problem = path_problem(p)[1]
    if problem is not None:  # never open a FIFO, a device, a link loop
        raise UnsupportedInputError(p, problem)
    if kind is None:
        guessed = guess_kind(p, given=True)
        if guessed is None:
            raise UnsupportedInputError(p, "not a video, image scene or 3D model")
        kind = guessed
    cls = get_source_class(kind)
    return cls(p, **options)


def colour_option(value: Any) -> tuple[int, int, int]:
    """The source option ``background``: ``[r, g, b]`` in 0..255 or a colour name
    (``white``, ``#808080``), what transparent pixels become (images, videos with alpha)."""
    from PIL import ImageColor

    rgb: tuple[int, ...]
    try:
        if isinstance(value, str):
            rgb = tuple(ImageColor.getrgb(value)[:3])
        else:
            rgb = tuple(int(c) for c in value)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        near = did_you_mean([value], ImageColor.colormap) if isinstance(value, str) else ""
        raise ConfigError(
            f"source option background ({value!r}) must be [r, g, b] in 0..255 or a colour "
            f"name{near}"
        )
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))
