"""The video indexes a process keeps, bounded by count and by an estimate of their bytes.

An index holds per-packet arrays (about 33 bytes a frame) and, once a reader has sought in
it, a ``pos_of`` dict (about 110 bytes a packet): measured on a 1-hour 60 fps video (216,000
frames), 7 MB of arrays after the build and 32 MB after a read. Sixteen such indexes are
half a gigabyte in every decoding process, so the cache also stops at ``max_bytes``; the
index used last is always kept, however large.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

DICT_ENTRY_BYTES = 64
"""The key and value int objects of one entry of an index's dicts (beyond the dict itself)."""


def index_bytes(index: Any) -> int:
    """An estimate of the memory an index holds: its arrays, and the arrays and dicts it
    caches (what it keeps, not the process's RSS)."""
    parts = list(vars(index).values())
    cached = getattr(index, "_cache", None)
    if isinstance(cached, dict):
        parts += list(cached.values())
    total = 0
    for value in parts:
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, dict) and value is not cached:
            total += sys.getsizeof(value) + DICT_ENTRY_BYTES * len(value)
    return total


class IndexCache:
    """Least recently used indexes: at most ``kept`` of them, and no more than ``max_bytes``
    (:func:`index_bytes`, measured when one is added or used, as an index grows when
    read) beyond the one used last."""

    def __init__(self, kept: int, max_bytes: int) -> None:
        self.kept = kept
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        """The index of ``key`` (now the one used last), or None."""
        index = self._items.get(key)
        if index is not None:
            self._items.move_to_end(key)
            self._trim()
        return index

    def put(self, key: Hashable, index: Any) -> None:
        self._items[key] = index
        self._items.move_to_end(key)
        self._trim()

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[Hashable]:
        """The keys kept, least recently used first."""
        return list(self._items)

    def nbytes(self) -> int:
        """The estimated bytes of the indexes kept."""
        return sum(index_bytes(i) for i in self._items.values())

    def _trim(self) -> None:
        while len(self._items) > 1 and (
            len(self._items) > self.kept or self.nbytes() > self.max_bytes
        ):
            self._items.popitem(last=False)
