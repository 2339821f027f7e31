"""Decoded video frames -> upright RGB arrays: full size, or scaled while converting.

Conversions go through a few shared ``VideoReformatter`` objects, each used by one thread
at a time: a frame's own ``to_ndarray`` / ``reformat`` sets up a new swscale context (and
its threads) for every frame, which costs far more than converting a small picture. A
context is only reused, never shared at once; swscale sets itself up again when a frame's
size or format differs from the last, so the pixels are those of a fresh context. A forked
child starts with none (see :meth:`Reformatters.forget`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from framepipe.sources.video.decode import may_be_transparent

Convert = Callable[[Any], np.ndarray]


class Reformatters:
    """Idle ``VideoReformatter`` objects, each handed to one thread at a time."""

    def __init__(self) -> None:
        self.idle: list[Any] = []
        self.lock = threading.Lock()
        self.inherited: list[Any] = []
        """A parent's reformatters in a forked child: kept, never used nor freed."""

    def forget(self) -> None:
        """In a forked child: the parent's contexts convert on the parent's swscale threads,
        which the child does not have (a conversion through one waits for them forever, as
        freeing one would), and the lock may be held by a parent thread: start afresh."""
        self.inherited.extend(self.idle)
        self.idle = []
        self.lock = threading.Lock()

    @contextmanager
    def take(self) -> Iterator[Any]:
        """A ``VideoReformatter`` no other thread uses until this one hands it back."""
        with self.lock:
            r = self.idle.pop() if self.idle else None
        if r is None:
            from av.video.reformatter import VideoReformatter

            r = VideoReformatter()
        try:
            yield r
        finally:
            with self.lock:
                self.idle.append(r)


REFORMATTERS = Reformatters()
"""Shared by every video's reads in this process (as many as ever converted at once)."""


def _after_fork_in_child() -> None:
    REFORMATTERS.forget()


if hasattr(os, "register_at_fork"):  # pragma: no branch - not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


WHITE = (255, 255, 255)


def over(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """RGBA (straight alpha, as FFmpeg decodes it) composited on ``background``: RGB."""
    a = rgba[..., 3:].astype(np.uint32)
    bg = np.asarray(background, dtype=np.uint32)
    mixed = rgba[..., :3].astype(np.uint32) * a + bg * (255 - a) + 127
    return (mixed // 255).astype(np.uint8)


def to_rgb(rotation: int, background: tuple[int, int, int] = WHITE) -> Convert:
    """Frame -> upright RGB array; a picture with alpha composited on ``background`` (as
    images are: what lies under a transparent pixel is whatever the encoder left there)."""
    k = rotation // 90

    def convert(frame: Any) -> np.ndarray:
        alpha = may_be_transparent(frame.format)
        with REFORMATTERS.take() as r:
            img = r.reformat(frame, format="rgba" if alpha else "rgb24").to_ndarray()
        if alpha:
            img = over(img, background)
        return np.ascontiguousarray(np.rot90(img, k=k)) if k else img

    return convert


def to_small_rgb(
    rotation: int, size: tuple[int, int], background: tuple[int, int, int] = WHITE
) -> Convert:
    """Frame -> upright RGB array of ``size`` = (width, height), scaled by swscale (alpha
    composited on ``background``, see :func:`to_rgb`)."""
    w, h = size
    k = rotation // 90
    sw, sh = (h, w) if k % 2 else (w, h)

    def convert(frame: Any) -> np.ndarray:
        alpha = may_be_transparent(frame.format)
        fmt = "rgba" if alpha else "rgb24"
        with REFORMATTERS.take() as r:
            img = r.reformat(frame, width=sw, height=sh, format=fmt, interpolation="AREA")
        arr = over(img.to_ndarray(), background) if alpha else img.to_ndarray()
        return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr

    return convert
