"""Small helpers shared by several stages."""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import functools
import glob
import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
import unicodedata
import weakref
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, TypeVar

_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key for natural order: ``img2`` before ``img10``, case-insensitive (``img1``,
    ``IMG2``, ``img3``); names equal but for case or leading zeros are then ordered by
    the name itself, so the order is total and stable. Letters are compared in Unicode's
    composed form (NFC), so that a name as macOS writes it (``e`` + combining accent) sorts
    where the same name written as one character (``é``) does: a copied scene's views keep
    their order on every machine."""
    parts = _NUM.split(unicodedata.normalize("NFC", name))  # digit runs at the odd positions
    key = tuple((0, int(p)) if k % 2 else (1, p.lower()) for k, p in enumerate(parts) if p)
    return (key, name)


def as_path(value: Any, what: str = "path") -> Path:
    """``value`` (a ``str``, an ``os.PathLike`` or ``bytes``: a name as the OS gives it, kept
    exactly through :func:`os.fsdecode`) as a ``Path``; a TypeError naming ``what`` and the
    value for anything else (``None``, a number)."""
    if isinstance(value, bytes):
        return Path(os.fsdecode(value))
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    shown = repr(value)  # one line: an array's repr is pages of them
    shown = f": {shown}" if len(shown) <= 120 and "\n" not in shown else ""
    raise TypeError(
        f"{what} must be a file or folder path (str, pathlib.Path or bytes), "
        f"not {type(value).__name__}{shown}{in_memory_note(value)}"
    )


def in_memory_note(value: Any) -> str:
    """What to do with pictures held in memory (a numpy array, a PIL image, a tensor: what
    has ``__array__`` or ``__array_interface__``) given where files are read; "" for
    anything else, and for an array of text (paths in a numpy array or a pandas Series)."""
    if getattr(getattr(value, "dtype", None), "kind", None) in ("U", "S", "O"):
        return ""
    if hasattr(value, "__array__") or hasattr(value, "__array_interface__"):
        return (
            " (framepipe reads media files: save frames held in memory as a video or a "
            "folder of images first)"
        )
    return ""


def shown_text(s: str) -> str:
    """``s`` as UTF-8-safe text to show a user: a file name's bytes that are not UTF-8
    (kept by Python as surrogate escapes, :func:`os.fsdecode`) shown as ``\\xff``, any
    other lone surrogate as ``\\udXXX``. The one way the command line and the HTML report
    show such names."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


_URL = re.compile(r"\b([a-zA-Z][\w+.-]*://)([^\s/?#@'\"]*@)?([^\s?#'\"]*)(\?[^\s#'\"]*)?")


def without_secrets(text: str) -> str:
    """``text`` with what a URL in it may carry as a secret hidden: each query parameter's
    value (a signed URL's token, ``?token=***&X-Amz-Signature=***``) and a password
    (``user:***@host``). For what is shown or logged: the records name an input as given."""

    def hide(m: re.Match[str]) -> str:
        scheme, user, rest, query = m.group(1), m.group(2) or "", m.group(3), m.group(4) or ""
        if ":" in user:
            user = user.split(":", 1)[0] + ":***@"
        tail = query[len(query.rstrip(":;,.)]")) :]  # the sentence's, not the URL's
        if query:
            parts = query[1 : len(query) - len(tail)].split("&")
            query = "?" + "&".join(
                p.split("=", 1)[0] + "=***" if "=" in p else p and "***" for p in parts
            )
        return scheme + user + rest + query + tail

    return _URL.sub(hide, text)


def stable_digest(obj: Any, length: int = 16) -> str:
    """A short hex digest of a JSON-able object (keys sorted), stable across runs."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def safe_stem(text: str, max_len: int = 80) -> str:
    """A file-name-safe version of ``text`` (keeps letters, digits, ``-_.``)."""
    s = re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("._")
    return (s or "clip")[:max_len]


def nonnegative(
    value: Any, name: str, error: type[Exception], not_a_number: str = "must be a number"
) -> float:
    """``value`` as a finite float >= 0, else ``error("NAME (VALUE) ...")``: ``not_a_number``
    when it is no number at all, ``must be a finite number >= 0`` otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} ({value!r}) {not_a_number}") from None
    if not math.isfinite(x) or x < 0:
        raise error(f"{name} ({value!r}) must be a finite number >= 0")
    return x


class NotTextError(json.JSONDecodeError):
    """A line of a JSON-lines file that is not text in the file's encoding (binary bytes)."""


def json_lines(
    path: Path, encoding: str = "utf-8", *, fh: BinaryIO | None = None
) -> Iterator[tuple[int, Any | json.JSONDecodeError]]:
    """``(line number, value)`` for each non-blank line of a JSON-lines file, the value being
    the line's JSON or, for a line that is not JSON, the :class:`json.JSONDecodeError` (a
    :class:`NotTextError` for one that is not text in ``encoding``): one bad line never
    stops the lines after it. Lines end at ``\\n`` (as JSON lines do); a line without its
    ``\\n`` ends the lines read: the file ended there when it was read, and a writer may
    have been half-way through it (what follows it by now is its rest, not lines of their
    own). ``fh``: ``path`` already open (binary), read from its start."""
    what = "UTF-8" if encoding.lower().replace("_", "-").startswith("utf-8") else encoding
    with contextlib.ExitStack() as files:
        src = fh if fh is not None else files.enter_context(open(path, "rb"))
        src.seek(0)
        for lineno, raw in enumerate(src, 1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                doc = raw.decode(encoding, "replace")
                pos = len(raw[: exc.start].decode(encoding, "replace"))
                yield lineno, NotTextError(f"not {what} text", doc, pos)
            else:
                if line.strip():
                    try:
                        yield lineno, json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield lineno, exc
            if not raw.endswith(b"\n"):
                return  # (the end of the file when it was read)


def allow_open_files(n: int) -> int:
    """Raise this process's soft limit of open files (``ulimit -n``), up to its hard limit,
    so that ``n`` more files can be open at once (a read holding every part file of a
    folder); returns how many of them may be (fewer where the hard limit says so, leaving
    room for what the process opens besides)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return n
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = 256  # (what the process opens besides, roughly)
    if soft != resource.RLIM_INFINITY and soft < n + spare:
        new = n + spare if hard == resource.RLIM_INFINITY else min(n + spare, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return n
    return max(0, min(n, soft - min(spare, soft // 2)))


SYNC_EVERY_S = 0.1
"""A records file is fsynced with the first line appended this long or longer after its last
fsync, and when its writer closes (group commit): a killed process loses nothing (each line
is flushed to the operating system as it is written); a machine that goes down may lose the
lines since the last fsync, which the next run redoes. An fsync per line (about 2 ms here)
would cap a cluster's driver at a few hundred records a second (BENCHMARKS.md)."""


def append_whole(fh: Any, data: bytes) -> None:
    """Append ``data`` to the unbuffered binary file ``fh`` (opened ``"ab", buffering=0``)
    whole or not at all: when a write fails part-way (a full disk, a quota), the part that
    went in is cut off again and the error raised, so the file never keeps half a line that
    the next line appended would be glued to (and nothing is left in a buffer for ``close``
    to fail on again)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            done += fh.write(view[done:])
    except OSError:
        if done:  # (write(2) reports an error only when it wrote nothing)
            with contextlib.suppress(OSError):
                os.ftruncate(fh.fileno(), os.fstat(fh.fileno()).st_size - done)
        raise


HOST = socket.gethostname().replace("/", "_") or "host"


def temp_beside(path: Path) -> Path:
    """A new empty file beside ``path`` to be moved onto it: hidden, named for this host and
    process (``.NAME.HOST-PID-XXXXXXXX.tmp``), so that :func:`remove_stale_temps` knows
    one whose process was killed."""
    prefix = f".{path.name.lstrip('.')}.{HOST}-{os.getpid()}-"
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        mask = os.umask(0)
        os.umask(mask)
        with contextlib.suppress(OSError):  # a new file's mode, not mkstemp's 0600
            os.chmod(name, 0o666 & ~mask)
    finally:
        os.close(fd)
    return Path(name)


def remove_stale_temps(path: Path) -> None:
    """Remove the files of :func:`temp_beside` beside ``path`` whose process (on this host)
    is gone: a merge or compaction killed half-way leaves a copy as large as the output."""
    prefix = f".{path.name.lstrip('.')}."
    try:
        found = list(path.parent.glob(glob.escape(prefix) + "*.tmp"))
    except OSError:
        return
    for p in found:
        host, _, rest = p.name[len(prefix) : -len(".tmp")].rpartition("-")
        host, _, pid = host.rpartition("-")
        if host == HOST and pid.isdigit() and rest and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                p.unlink()


def _alive(pid: int) -> bool:
    if os.name != "posix":  # (no harmless probe there): kept
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def sync_due(fh: Any, due: float, *, now: bool = False) -> float:
    """fsync ``fh`` when ``due`` (a ``time.monotonic()``) has come, or ``now``; returns when
    the next one is due."""
    t = time.monotonic()
    if now or t >= due:
        os.fsync(fh.fileno())
        return t + SYNC_EVERY_S
    return due


_C = TypeVar("_C", bound="Closing")


class Closing:
    """A context manager that closes what it holds: ``with obj:`` gives ``obj`` and calls
    ``obj.close()`` on the way out, whether or not the block raised."""

    def close(self) -> None:
        raise NotImplementedError  # pragma: no cover - each class that mixes it in closes

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def retry_after_s(headers: Any) -> float | None:
    """The seconds an HTTP ``Retry-After`` header of ``headers`` asks for (a number, or an
    HTTP date), None without one."""
    try:
        value = headers.get("Retry-After") if headers is not None else None
    except Exception:
        return None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


P = ParamSpec("P")
G = TypeVar("G", bound=Generator[Any, Any, Any])


def closed_at_exit(fn: Callable[P, G]) -> Callable[P, G]:
    """``fn`` (a function that returns a generator), its generators closed as the
    interpreter begins to exit when they are still open (a loop left with ``break`` while a
    variable holds the generator): their ``finally`` (a run's decoders stopped, its output
    tidied) runs while Python still works, not as its modules are torn down (where it
    fails)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> G:
        gen = fn(*args, **kwargs)
        ref = weakref.ref(gen)

        def close() -> None:
            if (g := ref()) is not None:
                g.close()

        atexit.register(close)
        weakref.finalize(gen, atexit.unregister, close).atexit = False  # collected: forgotten
        return gen

    return wrapper
