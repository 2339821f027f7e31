"""Requests in flight across clips: a bounded pool of daemon threads fed one clip at a time.

A backend that answers over the network (:mod:`framepipe.generate.server`) keeps up to
``workers`` requests running at once: as soon as one request ends, a thread takes the next
one submitted, whichever clip it belongs to, so a slow answer never holds the others back
(no batch waits for its slowest request before the next clips start). The caller submits a
clip's requests (:meth:`InFlight.submit`) and takes back each clip whose requests have all
ended (:meth:`InFlight.done`), in the order they end; the caller bounds how many clips it
has submitted and not taken back (their frames are held until then).

Threads are daemons: a request in flight never holds the process at exit, so Ctrl-C stops
at once. :meth:`InFlight.close` with clips still in flight (Ctrl-C, a stopped run, a caller
that stopped iterating) sets ``cancel``: requests not started never start, and those in
flight are neither retried nor followed by others; their connections are shut
(:class:`Connections`: the server stops working on them, vLLM aborts a request whose client
went away) so that their threads end at once too.

Pools used at once from several threads (a Ray actor answering several batches at once,
so that requests never drain between them) may share ``slots``: then ``workers`` requests
run at once over all of them, not per pool.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import queue
import socket
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from framepipe.errors import StopRunError

log = logging.getLogger(__name__)

Ask = Callable[[Any, int], Any]
"""Question ``k`` of a request: its result (a backend's own errors are results too)."""
Assemble = Callable[[Any, list[Any]], Any]
"""A request and its questions' results: the clip's answer, or its error."""


class InFlight:
    """Up to ``workers`` calls of ``ask`` at once, over every clip submitted.

    ``stop``: the error every later request would hit, once known (a server gone for good);
    :meth:`done` raises it.
    """

    def __init__(
        self,
        ask: Ask,
        assemble: Assemble,
        workers: int,
        cancel: threading.Event,
        stop: Callable[[], StopRunError | None] = lambda: None,
        connections: Connections | None = None,
        slots: threading.Semaphore | None = None,
    ) -> None:
        self.ask, self.assemble, self.workers = ask, assemble, max(1, int(workers))
        self.cancel, self.stop, self.connections = cancel, stop, connections
        self.slots = slots
        """Held by each request while it runs, shared with other pools (None: none)."""
        self._todo: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._ended: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._clips: dict[int, tuple[Any, Any, list[Any], list[int]]] = {}
        """Clip number -> (tag, request, results by question, [questions left])."""
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._next = 0
        self._queued = 0  # requests submitted and not yet taken by a thread

    @property
    def pending(self) -> int:
        """Clips submitted and not yet handed back by :meth:`done`."""
        return len(self._clips)

    def submit(self, tag: Any, request: Any, questions: int) -> None:
        """Ask the ``questions`` questions of ``request`` (handed back with ``tag``)."""
        n = self._next
        self._next += 1
        self._clips[n] = (tag, request, [None] * questions, [questions])
        if questions == 0:
            self._ended.put(n)
            return
        with self._lock:
            self._queued += questions
            wanted = min(self.workers, len(self._threads) + self._queued)
        while len(self._threads) < wanted:
            t = threading.Thread(target=self._work, name="framepipe-openai", daemon=True)
            self._threads.append(t)
            t.start()
        for k in range(questions):
            self._todo.put((n, k))

    def done(self, *, block: bool) -> list[tuple[Any, Any]]:
        """``(tag, answer or error)`` of each clip whose requests have all ended since the
        last call (with ``block``: at least one, while any is pending); raises the stop."""
        ended: list[int] = []
        while block and self._clips and not ended:
            with contextlib.suppress(queue.Empty):
                ended.append(self._ended.get(timeout=0.2))
            self._raise_stop()
        while True:
            try:
                ended.append(self._ended.get_nowait())
            except queue.Empty:
                break
        self._raise_stop()
        out = []
        for n in ended:
            tag, request, results, _ = self._clips.pop(n)
            out.append((tag, self.assemble(request, results)))
        return out

    def close(self) -> None:
        """End the threads; with clips still in flight, cancel their requests."""
        if self._clips:
            self.cancel.set()
            if self.connections is not None:
                self.connections.shut()
        for _ in self._threads:
            self._todo.put(None)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _raise_stop(self) -> None:
        stop = self.stop()
        if stop is not None:
            raise stop

    def _work(self) -> None:
        while not self.cancel.is_set():
            item = self._todo.get()
            if item is None:
                return
            n, k = item
            with self._lock:
                self._queued -= 1
            if self.cancel.is_set():
                return
            _, request, results, left = self._clips[n]
            while self.slots is not None and not self.slots.acquire(timeout=0.2):
                if self.cancel.is_set():
                    return
            try:
                results[k] = self.ask(request, k)
            except Exception as exc:  # a bug: the clip's failed record, the run goes on
                log.exception("a request failed")
                results[k] = exc
            finally:
                if self.slots is not None:
                    self.slots.release()
            with self._lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._ended.put(n)


class Connections:
    """The connections of the requests in flight (made through :meth:`opener`), to shut
    them when the requests are cancelled: a thread blocked reading an answer returns at
    once. One per run (a backend loaded again makes a new one)."""

    def __init__(self) -> None:
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._shut = False

    def opener(self) -> urllib.request.OpenerDirector:
        """An opener whose HTTP(S) connections are tracked (the environment's proxies as
        ``urllib.request.build_opener`` finds them now)."""
        return urllib.request.build_opener(_HTTP(self), _HTTPS(self))

    def shut(self) -> None:
        """Shut every connection open now, and those opened later (a request that was
        starting): their requests fail at once."""
        with self._lock:
            self._shut = True
            socks = list(self._open)
        for sock in socks:
            _shut(sock)

    def add(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._open.add(sock)
                late = self._shut
            if late:
                _shut(sock)

    def discard(self, sock: Any) -> None:
        with self._lock:
            self._open.discard(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Tracked:
    """Mixed into an ``http.client`` connection: its socket is in ``track`` while open."""

    track: Connections
    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.track.add(self.sock)

    def close(self) -> None:
        self.track.discard(self.sock)
        super().close()  # type: ignore[misc]


class _HTTPConnection(_Tracked, http.client.HTTPConnection):
    def __init__(self, *args: Any, track: Connections, **kw: Any) -> None:
        self.track = track
        super().__init__(*args, **kw)


class _HTTPSConnection(_Tracked, http.client.HTTPSConnection):
    def __init__(self, *args: Any, track: Connections, **kw: Any) -> None:
        self.track = track
        super().__init__(*args, **kw)


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, track: Connections) -> None:
        super().__init__()
        self.track = track

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPConnection, track=self.track), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, track: Connections) -> None:
        super().__init__()
        self.track = track

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        make = functools.partial(_HTTPSConnection, track=self.track)
        return self.do_open(make, req, context=self._context)  # type: ignore[attr-defined]
