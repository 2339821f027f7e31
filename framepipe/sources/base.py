"""The Source interface and the registry of source kinds.

A source opens cheaply, reports :class:`~framepipe.types.SourceInfo` (metadata only) and
reads exactly the indices it is asked for. Heavy libraries are imported inside the source
that needs them, so a missing backend makes that kind unavailable instead of breaking
``import framepipe``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framepipe.errors import ConfigError, UnsupportedInputError
from framepipe.types import FrameBatch, SourceInfo

log = logging.getLogger(__name__)


class Source(ABC):
    """One input (a video file, a scene folder, a 3D model file).

    Subclasses set ``kind`` and implement :meth:`info` and :meth:`read`; :meth:`read_small`
    has a default built on :meth:`read` that kinds with a cheaper path override.
    Sources are context managers; :meth:`close` releases file handles and decoders.
    """

    kind: ClassVar[str] = ""
    extensions: ClassVar[frozenset[str]] = frozenset()
    """Lower-case file suffixes (with the dot) this kind claims, for discovery."""

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        self.options = options

    # -- discovery ------------------------------------------------------------------------
    @classmethod
    def claims_file(cls, path: Path) -> bool:
        """Whether this kind reads the file ``path`` (by extension; cheap)."""
        return path.suffix.lower() in cls.extensions

    @classmethod
    def sniff_file(cls, path: Path, head: bytes) -> bool:
        """Whether the first bytes of a file with an unknown extension look like this kind."""
        return False

    @classmethod
    def claims_dir(cls, path: Path) -> bool:
        """Whether the folder ``path`` is itself one input of this kind (e.g. a scene)."""
        return False

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

        Returns a uint8 array N x height x width x 3. This is the cheap signal that the
        keyframe and n-view samplers use; kinds override it with a faster path.
        """
        from PIL import Image

        idx = list(range(start, end, step))
        batch = self.read(idx)
        out = np.empty((len(idx), size[1], size[0], 3), dtype=np.uint8)
        for k, f in enumerate(batch.images()):
            out[k] = np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; safe to call twice."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


SourceFactory = Callable[..., Source]

_SOURCES: dict[str, type[Source]] = {}
_UNAVAILABLE: dict[str, str] = {}


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make ``cls`` available under ``cls.kind``."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind")
    _SOURCES[cls.kind] = cls
    return cls


def mark_unavailable(kind: str, reason: str) -> None:
    """Record that a kind exists but cannot be used here (missing library)."""
    _UNAVAILABLE[kind] = reason


def source_kinds() -> dict[str, type[Source]]:
    """Registered kinds, in registration order."""
    _load_builtin()
    return dict(_SOURCES)


_SNIFF_BYTES = 64


def guess_kind(path: Path, *, sniff: bool = True) -> str | None:
    """The kind that reads ``path``, or None. Folders: only if a kind claims the folder.
    Files: by extension, then (``sniff``) by their first bytes."""
    kinds = source_kinds()
    if path.is_dir():
        for kind, cls in kinds.items():
            if cls.claims_dir(path):
                return kind
        return None
    for kind, cls in kinds.items():
        if cls.claims_file(path):
            return kind
    if sniff:
        try:
            with open(path, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        except OSError:
            return None
        for kind, cls in kinds.items():
            if cls.sniff_file(path, head):
                return kind
    return None


def get_source_class(kind: str) -> type[Source]:
    _load_builtin()
    if kind in _SOURCES:
        return _SOURCES[kind]
    if kind in _UNAVAILABLE:
        raise ConfigError(f"source kind {kind!r} is unavailable: {_UNAVAILABLE[kind]}")
    raise ConfigError(f"unknown source kind {kind!r}; known: {', '.join(sorted(_SOURCES))}")


def open_source(path: str | Path, kind: str | None = None, **options: Any) -> Source:
    """Open ``path`` as ``kind`` (guessed from the path when None)."""
    p = Path(path)
    if kind is None:
        guessed = guess_kind(p)
        if guessed is None:
            raise UnsupportedInputError(p, "not a video, image scene or 3D model")
        kind = guessed
    cls = get_source_class(kind)
    return cls(p, **options)


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in ("video", "multiview", "render"):
        try:
            importlib.import_module(f"framepipe.sources.{mod}")
        except ImportError as exc:  # a missing module or backend: that kind is unavailable
            log.debug("source module %s unavailable: %s", mod, exc)
            mark_unavailable(mod, str(exc))
