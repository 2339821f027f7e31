"""Inputs listed more than once are read once: the same file (however its path is spelled:
``a.mp4``, ``./a.mp4``, a link to it) or the same URI, with the same manifest ``id``, clip
range and questions, is one input. Inputs that differ in any of these stay apart, but for
one case: where the run knows its default questions (``caption``), a row with no questions
and a row whose questions are those defaults ask the same, so they are one input.

Manifests stream millions of rows, so what is kept of each input taken is a 64-bit digest of
its identity in a flat table (8 bytes a slot, at most three quarters full), not the input:
ten million rows hold about 100 MiB. Two different inputs share a digest with a chance of
about n²/2^65 (one in 40 million for a million rows); the later one would then be dropped
as a duplicate.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Callable, Sequence

from framepipe.discovery import Input

_EMPTY = 0

DefaultQuestions = Callable[[str], Sequence[str]]
"""The questions a run asks about an input of a kind when its row has none."""


def place(item: Input) -> str:
    """Where an input is: its URI, or the real path of a local file (links and ``./``
    resolved), so every spelling of one file is one place."""
    if item.uri is not None:
        return item.uri
    try:
        return os.path.realpath(item.path)
    except (OSError, ValueError):  # (a NUL in a name): the path as given
        return os.path.abspath(item.path)


def identity(item: Input, defaults: DefaultQuestions | None = None) -> tuple[object, ...]:
    """What makes two inputs one: its :func:`place`, and what a manifest row adds (``id``,
    clip range, questions; questions equal to ``defaults(kind)`` count as none)."""
    questions = item.questions
    if questions is not None and defaults is not None and questions == tuple(defaults(item.kind)):
        questions = None
    return (place(item), item.id, item.start_s, item.end_s, questions)


def _digest(ident: tuple[object, ...]) -> int:
    text = repr(ident).encode("utf-8", "surrogateescape")
    value = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")
    return value or 1  # 0 marks an empty slot


class Taken:
    """The inputs taken so far (their digests): :meth:`first` says whether an input is new.
    ``defaults``: the run's default questions, where it knows them (see :func:`identity`)."""

    def __init__(self, defaults: DefaultQuestions | None = None) -> None:
        self._defaults = defaults
        self._slots = array("Q", bytes(8 * 1024))
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first(self, item: Input) -> bool:
        """Whether ``item`` is taken now for the first time (it is then remembered)."""
        if self._insert(_digest(identity(item, self._defaults))):
            self._count += 1
            if 4 * self._count > 3 * len(self._slots):
                self._grow()
            return True
        return False

    def _insert(self, value: int) -> bool:
        slots = self._slots
        mask = len(slots) - 1
        k = value & mask
        while slots[k] != _EMPTY:
            if slots[k] == value:
                return False
            k = (k + 1) & mask
        slots[k] = value
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        for value in old:
            if value != _EMPTY:
                self._insert(value)
