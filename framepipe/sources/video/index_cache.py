"""The video indexes a process keeps, bounded by count and by an estimate of their bytes.

An index holds per-packet arrays (about 33 bytes a frame) and, once a reader has sought in
it, a ``pos_of`` dict (about 110 bytes a packet): measured on a 1-hour 60 fps video (216,000
frames), 7 MB of arrays after the build and 32 MB after a read. Sixteen such indexes are
half a gigabyte in every decoding process, so the cache also stops at ``max_bytes``; the
index used last is always kept, however large.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
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
    read) beyond the one used last. Safe to share between threads (a library user's, say):
    each call holds a lock, as a trim walks the indexes kept."""

    def __init__(self, kept: int, max_bytes: int) -> None:
        self.kept = kept
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        # a child forked while another thread held the lock would wait on it for ever
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):  # pragma: no branch - not on Windows
            os.register_at_fork(after_in_child=lambda: _new_lock(ref()))

    def get(self, key: Hashable) -> Any | None:
        """The index of ``key`` (now the one used last), or None."""
        with self._lock:
            index = self._items.get(key)
            if index is not None:
                self._items.move_to_end(key)
                self._trim()
            return index

    def put(self, key: Hashable, index: Any) -> None:
        with self._lock:
            self._items[key] = index
            self._items.move_to_end(key)
            self._trim()

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[Hashable]:
        """The keys kept, least recently used first."""
        with self._lock:
            return list(self._items)

    def nbytes(self) -> int:
        """The estimated bytes of the indexes kept."""
        with self._lock:
            return self._nbytes()

    def _nbytes(self) -> int:
        return sum(index_bytes(i) for i in self._items.values())

    def _trim(self) -> None:
        while len(self._items) > 1 and (
            len(self._items) > self.kept or self._nbytes() > self.max_bytes
        ):
            self._items.popitem(last=False)


def _new_lock(cache: IndexCache | None) -> None:
    if cache is not None:
        cache._lock = threading.Lock()
