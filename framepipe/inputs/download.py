"""How a remote object is downloaded (for :func:`framepipe.inputs.remote.stage`): watched for
stalls, retried on transient failures, through part files that a later download of the same
object removes once their writer is gone.

- **Stalls.** A download may take as long as it needs while bytes arrive; one that receives
  nothing for ``stall_s`` seconds is stopped (:class:`DownloadStalled`). ``beat`` is called
  (at most about once a second) while bytes arrive, so that the decoder supervisor does not
  count a download against its decode timeout (:mod:`framepipe.engine.supervisor`).
- **Transient failures** (HTTP 429, 500, 502, 503, 504; a connection reset or dropped in the
  middle of a response) are tried again, :data:`RETRIES` times, waiting :data:`BACKOFF_S`
  seconds doubled each time, or what the server's ``Retry-After`` asks (at most
  :data:`MAX_WAIT_S`). A missing object, a refusal (403), a server that does not listen and
  a stall are not. S3 and GCS have their own clients' retries; these are for HTTP.
- **Part files** ``.<name>.<random>.<pid>@<host>.part``: a download that is killed leaves
  one; the next download of the object removes those whose writer process is gone (on this
  host), or that nobody wrote to for twice the stall time (another host's, an older one's).
- **An error every input would hit** (no credentials, an expired token): see
  :func:`every_input_problem`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from framepipe.utils import retry_after_s, safe_stem, without_secrets

log = logging.getLogger(__name__)

DEFAULT_STALL_S = 60.0
"""How long a download may receive nothing before it is stopped."""

RETRIES = 3
"""Tries after the first for a transient failure."""
BACKOFF_S = 1.0
"""The wait before the first retry (doubled for each next one), without ``Retry-After``."""
MAX_WAIT_S = 30.0
"""The longest wait before a retry, also when ``Retry-After`` asks for more."""
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

_TRANSIENT = frozenset({"ServerDisconnectedError", "ClientPayloadError", "ClientOSError"})
"""aiohttp's errors for a connection dropped or reset (by class name: aiohttp is optional)."""
_NOT_LISTENING = frozenset({"ClientConnectorError"})
"""aiohttp's error for a server that cannot be reached at all (refused, no such host)."""

T = TypeVar("T")


class DownloadStalled(Exception):
    """No bytes arrived for ``stall_s`` seconds."""

    def __init__(self, stall_s: float) -> None:
        super().__init__(f"download stalled (no data for {stall_s:g} s)")
        self.stall_s = stall_s


def _progress_callback(beat: Callable[[], None] | None, every_s: float) -> Any:
    """An fsspec callback that records when bytes last arrived and calls ``beat`` (at most
    once per ``every_s``)."""
    from fsspec.callbacks import Callback

    class Watch(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.last = self.beaten = time.monotonic()

        def call(self, hook_name: str | None = None, **kwargs: Any) -> None:
            now = self.last = time.monotonic()
            if beat is not None and now - self.beaten >= every_s:
                self.beaten = now
                beat()

    return Watch()


def fetch(
    fs: Any,
    path: str,
    target: Path,
    *,
    stall_s: float = DEFAULT_STALL_S,
    beat: Callable[[], None] | None = None,
) -> None:
    """Download ``path`` of the filesystem ``fs`` to ``target``, stopped with
    :class:`DownloadStalled` when nothing arrives for ``stall_s`` seconds."""
    watch = _progress_callback(beat, min(1.0, stall_s / 4))
    kwargs: dict[str, Any] = {}
    if "http" in _protocols(fs) and "timeout" not in (getattr(fs, "client_kwargs", None) or {}):
        import aiohttp  # no limit on the whole download (aiohttp's default is 300 s)

        kwargs["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=30)
    if not hasattr(fs, "_get_file") or not hasattr(fs, "loop"):  # not an async filesystem
        fs.get_file(path, str(target), callback=watch, **kwargs)
        return

    async def watched() -> None:
        task = asyncio.ensure_future(fs._get_file(path, str(target), callback=watch, **kwargs))
        try:
            while not task.done():
                left = watch.last + stall_s - time.monotonic()
                if left <= 0:
                    raise DownloadStalled(stall_s)
                await asyncio.wait({task}, timeout=left)
            task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    from fsspec.asyn import sync

    sync(fs.loop, watched)


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = getattr(fs, "protocol", ())
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (or while handling)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed request in ``exc``'s chain, if any."""
    for e in _chain(exc):
        status = getattr(e, "status", None)
        if isinstance(status, int) and status >= 400:
            return status
    return None


def retry_wait(exc: BaseException, attempt: int, max_wait_s: float = MAX_WAIT_S) -> float | None:
    """Seconds to wait (at most ``max_wait_s``) before trying again after ``exc`` (the
    ``attempt``-th retry, from 0), or None when it is no transient failure."""
    for e in _chain(exc):
        names = {c.__name__ for c in type(e).__mro__}
        if names & _NOT_LISTENING or isinstance(e, (ConnectionRefusedError, DownloadStalled)):
            return None
        status = getattr(e, "status", None)
        transient = status in RETRY_STATUSES or bool(names & _TRANSIENT)
        transient = transient or isinstance(e, (ConnectionResetError, ConnectionAbortedError))
        if transient:
            asked = retry_after_s(getattr(e, "headers", None))
            wait = BACKOFF_S * 2**attempt if asked is None else asked
            return min(wait, max_wait_s)
        if isinstance(status, int) and status >= 400:
            return None  # 404, 403 ...: the same again
    return None


def retrying(call: Callable[[], T], what: str, max_wait_s: float = MAX_WAIT_S) -> T:
    """``call()``, tried again after a transient failure (:func:`retry_wait`, waiting at
    most ``max_wait_s``); ``what`` names it in the log."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            wait = retry_wait(exc, attempt, max_wait_s) if attempt < RETRIES else None
            if wait is None:
                raise
            attempt += 1
            why = without_secrets(" ".join(str(exc).split()) or type(exc).__name__)
            what = without_secrets(what)  # a signed URL's token is no business of a log
            log.info("%s: %s; try %d of %d in %.1f s", what, why, attempt + 1, RETRIES + 1, wait)
            time.sleep(wait)


def _host() -> str:
    return safe_stem(socket.gethostname(), 40)


def part_path(dest: Path) -> Path:
    """A new part file for a download to ``dest``, naming its writer (pid and host)."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.{os.getpid()}@{_host()}.part")


def _writer_gone(token: str) -> bool:
    """Whether the writer named in a part file's ``token`` (``<random>.<pid>@<host>``) is a
    process of this host that has ended."""
    _, _, who = token.partition(".")
    pid, at, host = who.partition("@")
    if not at or not pid.isdigit() or host != _host() or os.name != "posix":
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's: alive
        return False
    return False


def remove_stale_parts(dest: Path, stall_s: float = DEFAULT_STALL_S) -> list[Path]:
    """Remove the part files of earlier downloads to ``dest`` whose writer has ended (a
    process of this host), or that nothing wrote to for twice ``stall_s`` (a live download
    writes more often, or stalls and stops); returns those removed."""
    prefix = f".{dest.name}."
    removed: list[Path] = []
    try:
        found = [p for p in dest.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for p in found:
        if not p.name.endswith(".part"):
            continue
        token = p.name[len(prefix) : -len(".part")]
        try:
            stale = _writer_gone(token) or now - p.stat().st_mtime > 2 * stall_s
            if stale:
                p.unlink()
                removed.append(p)
        except OSError:
            continue  # gone already (its writer finished), or not ours to remove
    if removed:
        log.debug("removed %d stale part file(s) of %s", len(removed), dest)
    return removed


_NO_CREDENTIALS = frozenset(
    {
        "NoCredentialsError",  # botocore
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "NoAuthTokenError",
        "DefaultCredentialsError",  # google.auth
        "RefreshError",
    }
)
_BAD_TOKEN = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "TokenRefreshRequired",
        "InvalidToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "RequestTimeTooSkewed",
    }
)


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a refusal (HTTP 400, 401 or 403, or a PermissionError), which may
    be one of the credentials themselves (see :func:`every_input_problem`)."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        meta = response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}
        status = meta.get("HTTPStatusCode", getattr(e, "status", None))
        if isinstance(e, PermissionError) or status in (400, 401, 403):
            return True
    return False


def every_input_problem(exc: BaseException) -> str | None:
    """What in ``exc`` every input of its filesystem would hit too (no credentials, an
    expired or unknown token, a clock too far off), in words; None for anything else (a
    missing object, one the credentials may not read, a server down)."""
    for e in _chain(exc):
        name = type(e).__name__
        text = " ".join(str(e).split())
        if name in _NO_CREDENTIALS:
            return f"no usable credentials ({name}: {text})" if text else "no usable credentials"
        response = getattr(e, "response", None)
        error = response.get("Error", {}) if isinstance(response, dict) else {}
        if error.get("Code") in _BAD_TOKEN:
            said = " ".join(str(error.get("Message") or text).split())
            return f"the credentials are refused ({error['Code']}: {said})"
    return None
