"""Remote inputs (``s3://``, ``gs://``, ``https://``) through fsspec, staged to a local cache.

Decoding seeks a lot, which is slow over a network, so a remote input is downloaded whole
before it is opened: by the decode stage (a worker, not the driver), into
``<cache>/<digest of the URI>/<file name>``, through a temporary file and an atomic rename.
A cached copy is used again when the object's size and ETag (or modification time) are those
recorded beside it, so a re-run downloads nothing that did not change. Without
``keep_downloads``, each use has a copy of its own under ``<cache>/.in-use/`` that the decode
stage removes once the input's clips are read (:func:`stage_for_use`, :func:`discard`).

The resume key of a remote input is its URI, size and ETag (or modification time), read with
one metadata request (``fs.info``) and no download (:func:`remote_stat`).

Each scheme needs its fsspec implementation (the package extras ``s3``, ``gcs``, ``http``);
:func:`check_scheme` says which one is missing, in one line, before any heavy work. Options
for the filesystems (``endpoint_url``, ``anon``, ``config_kwargs`` ...) come from
``SampleConfig.storage_options`` or fsspec's own configuration (``FSSPEC_S3_ENDPOINT_URL``).
Remote folders (scenes) are not supported: a remote input is one file.

Downloads are watched for stalls (not timed as a whole), transient HTTP failures are tried
again, and part files of killed downloads are removed (:mod:`framepipe.inputs.download`). An
error every input of a filesystem would hit (no credentials, an expired token) raises
:class:`~framepipe.errors.StopRunError`: the run stops at the first such input instead of
failing every one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from framepipe.errors import (
    ConfigError,
    FramepipeError,
    MissingDependencyError,
    SourceError,
    StopRunError,
)
from framepipe.inputs.download import (
    DEFAULT_STALL_S,
    MAX_WAIT_S,
    DownloadStalled,
    every_input_problem,
    fetch,
    http_status,
    part_path,
    refused,
    remove_stale_parts,
    retrying,
)
from framepipe.utils import safe_stem, stable_digest

log = logging.getLogger(__name__)

EXTRAS: dict[str, tuple[str, str]] = {
    "s3": ("s3", "s3fs"),
    "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"),
    "gcs": ("gcs", "gcsfs"),
    "http": ("http", "aiohttp"),
    "https": ("http", "aiohttp"),
}
"""URI scheme -> (framepipe extra, the package it installs)."""

META_SUFFIX = ".framepipe.json"
"""Beside each cached file: the URI, size, ETag and mtime it was downloaded at."""


class RemoteError(SourceError):
    """A remote input cannot be read (missing object, server down, cache not writable)."""


class RemoteMissing(RemoteError):
    """There is no such remote object."""


def scheme_of(text: str) -> str | None:
    """The URI scheme of ``text`` (``s3``, ``https`` ...), or None for a local path (a
    Windows drive letter is not a scheme)."""
    head, sep, _ = text.partition("://")
    if not sep or len(head) < 2 or not head.replace("+", "").replace("-", "").isalnum():
        return None
    return head.lower()


def is_remote(text: object) -> bool:
    """Whether ``text`` is a URI with a scheme other than ``file``."""
    if not isinstance(text, str):
        return False
    scheme = scheme_of(text)
    return scheme is not None and scheme != "file"


def file_uri_path(text: str) -> str | None:
    """The local path of a ``file://`` URI (``file:///data/a%20b.mp4`` is ``/data/a b.mp4``;
    the host may be empty or ``localhost``), else None."""
    if scheme_of(text) != "file":
        return None
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        return None
    return unquote(parts.path, errors="surrogateescape")


FILE_HOST = "a file:// URI names a file of this machine: file:///path or file://localhost/path"
"""Why a ``file://`` URI with another host is no input."""


class UnknownScheme(ConfigError):
    """A URI scheme that fsspec does not know (a typo, ``foo://``): the URI is no input at
    all, unlike a known scheme whose package is missing here."""


def scheme_problem(scheme: str, what: str = "inputs") -> FramepipeError | None:
    """Why URIs of ``scheme`` cannot be read here, or None: MissingDependencyError naming
    the extra to install (``what`` needs it), ConfigError for a scheme whose package is
    missing and has no extra, UnknownScheme for one fsspec does not know. The message
    names no URI, so that one check serves every URI of the scheme."""
    extra, package = EXTRAS.get(scheme, (None, None))
    purpose = f"{scheme}:// {what}"
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with every extra
        return MissingDependencyError("fsspec", extra or "s3", purpose)
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        if package is None:
            return ConfigError(f"{scheme}:// needs a package ({exc})")
        return MissingDependencyError(package, extra, purpose)
    except ValueError:
        return UnknownScheme(f"unknown URI scheme {scheme!r}")
    return None


def check_scheme(uri: str, what: str = "inputs") -> None:
    """A one-line MissingDependencyError when ``uri``'s scheme has no fsspec implementation
    here (naming the extra to install, and ``what`` needs it), ConfigError naming ``uri``
    for a scheme without a package here or unknown to fsspec (UnknownScheme)."""
    problem = scheme_problem(scheme_of(uri) or "", what)
    if isinstance(problem, ConfigError):
        raise type(problem)(f"{uri}: {problem}") from None
    if problem is not None:
        raise problem


def default_cache_dir() -> Path:
    """Where remote inputs are staged by default: ``$FRAMEPIPE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/framepipe/remote`` (``~/.cache/framepipe/remote``)."""
    env = os.environ.get("FRAMEPIPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "framepipe" / "remote"


def file_name(uri: str) -> str:
    """The file name of a URI's object (its extension tells the kind)."""
    name = unquote(urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1])
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return safe_stem(name, 80)
    return f"{safe_stem(stem, 80)}.{safe_stem(ext, 16)}"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder remote objects are staged in: ``cache_dir``, else
    :func:`default_cache_dir`; absolute (no I/O), so that a cluster's workers, each in a
    folder of its own, stage where the run was told."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root.absolute()


def cache_path(uri: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``uri`` is staged: ``<cache_dir>/<digest of the URI>/<file name>``."""
    return cache_root(cache_dir) / stable_digest(uri, 20) / file_name(uri)


@dataclass(frozen=True)
class RemoteStat:
    """What one metadata request tells of a remote object."""

    uri: str
    size: int | None
    etag: str | None
    mtime: str | None

    def fingerprint(self) -> dict[str, Any]:
        """The input's identity in resume keys."""
        out: dict[str, Any] = {"uri": self.uri, "size": self.size}
        if self.etag is not None:
            out["etag"] = self.etag
        else:
            out["mtime"] = self.mtime
        return out


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``uri`` and the path on it (the scheme's extra checked)."""
    import fsspec

    check_scheme(uri)
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path


def remote_error(uri: str, exc: BaseException) -> RemoteError | StopRunError:
    """A one-line error naming ``uri`` for a failed remote call: StopRunError for one that
    every input of its filesystem would hit (no credentials, an expired token)."""
    every = every_input_problem(exc)
    if every is not None:
        scheme = scheme_of(uri) or "remote"
        return StopRunError(
            f"{uri}: {every}; every {scheme}:// input would fail the same way: fix it and "
            "run the same command again (a run stops here, keeping what it wrote)"
        )
    if isinstance(exc, DownloadStalled):
        return RemoteError(uri, str(exc))
    cause = exc.__cause__
    if isinstance(exc, FileNotFoundError) and cause is not None:
        # fsspec's HTTP filesystem says "not found" for any failure: the cause tells
        if getattr(cause, "status", None) in (None, 404) and isinstance(cause, OSError):
            exc = cause  # the server could not be reached
        elif getattr(cause, "status", 404) != 404:
            exc = cause
    if isinstance(exc, FileNotFoundError) or getattr(exc, "status", None) == 404:
        return RemoteMissing(uri, "no such remote object")
    status = http_status(exc)
    if isinstance(exc, PermissionError) or status in (401, 403):
        text = " ".join(str(exc).split())
        if status in (401, 403):
            text = f"HTTP {status} {getattr(exc, 'message', '') or ''}".strip()
        return RemoteError(uri, f"access denied ({text})")
    if type(exc).__name__ == "TooManyRedirects":
        return RemoteError(uri, "cannot read the remote object (too many redirects)")
    if status is not None and hasattr(exc, "message"):  # aiohttp's "503, message='...'"
        text = f"HTTP {status} {exc.message or ''}".strip()
        return RemoteError(uri, f"cannot read the remote object ({text})")
    text = " ".join(str(exc).split()) or type(exc).__name__
    return RemoteError(uri, f"cannot read the remote object ({type(exc).__name__}: {text})")


def remote_stat(uri: str, storage_options: dict[str, Any] | None = None) -> RemoteStat:
    """Size, ETag and modification time of ``uri`` (one metadata request); RemoteError when
    the object is missing or the server cannot be reached, StopRunError for an error every
    input of the filesystem would hit (see :func:`remote_error`)."""
    try:
        fs, path = filesystem(uri, storage_options)
        info = retrying(lambda: fs.info(path), uri)
    except FramepipeError:
        raise
    except Exception as exc:
        if refused(exc) and scheme_of(uri) not in ("http", "https"):
            # an object store answers a metadata (HEAD) request without saying why: a
            # one-byte read does, e.g. InvalidAccessKeyId or ExpiredToken for every input
            try:
                fs.cat_file(path, start=0, end=1)
            except Exception as why:
                if every_input_problem(why) is not None:
                    exc = why
        raise remote_error(uri, exc) from None
    if info.get("type") == "directory":
        raise RemoteError(uri, "is a remote folder (remote inputs are single files)")
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    mtime = (
        info.get("LastModified")
        or info.get("Last-Modified")
        or info.get("last_modified")
        or info.get("updated")
        or info.get("mtime")
    )
    size = info.get("size")
    return RemoteStat(
        uri,
        None if size is None else int(size),
        None if etag is None else str(etag).strip('"'),
        None if mtime is None else str(mtime),
    )


METADATA_TIMEOUT_S = 5.0
"""How long the decoder supervisor waits for a remote input's metadata before it leaves the
question (is the input done?) to a decoder process (:func:`stat_within`)."""


def stat_within(
    uri: str, storage_options: dict[str, Any] | None, timeout_s: float = METADATA_TIMEOUT_S
) -> RemoteStat | None:
    """:func:`remote_stat` of ``uri`` if it answers within ``timeout_s`` seconds, else None;
    None too for any error (the read stage asks again, and its failed record says what is
    wrong). The request runs in a daemon thread, so a server that never answers holds up
    nothing: its answer is dropped."""
    got: list[RemoteStat] = []

    def ask() -> None:
        with contextlib.suppress(Exception):
            got.append(remote_stat(uri, storage_options))

    asking = threading.Thread(target=ask, name="framepipe-metadata", daemon=True)
    asking.start()
    asking.join(timeout_s)
    return got[0] if got else None


def _cached(dest: Path, stat: RemoteStat) -> bool:
    """Whether ``dest`` holds the object ``stat`` describes (size and ETag/mtime match)."""
    meta = dest.with_name(dest.name + META_SUFFIX)
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        size = dest.stat().st_size
    except (OSError, ValueError):
        return False
    if stat.etag is None and stat.mtime is None:
        return False  # nothing tells whether it changed: download again
    if stat.size is not None and size != stat.size:
        return False
    return bool(recorded == stat.fingerprint())


def stage(
    uri: str,
    dest: Path,
    *,
    stat: RemoteStat | None = None,
    storage_options: dict[str, Any] | None = None,
    stall_s: float = DEFAULT_STALL_S,
    on_download: Callable[[bool], None] | None = None,
) -> Path:
    """Download ``uri`` to ``dest`` (unless the cached copy is current) and return ``dest``.

    The object is written to a temporary file beside ``dest`` and renamed into place, so a
    killed download never leaves a partial file under the final name (the part files such
    downloads leave are removed by the next download of the object); concurrent stagings of
    one URI each rename a whole copy. RemoteError (one line, naming the URI) on failure: a
    download that receives nothing for ``stall_s`` seconds is stopped, a transient failure
    is tried again. ``on_download(True)`` is called when the download starts and while
    bytes arrive, ``on_download(False)`` when it is over.
    """
    stat = stat or remote_stat(uri, storage_options)
    if _cached(dest, stat):
        log.debug("%s: using the cached copy %s", uri, dest)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # named: the folder that could not be made (the cache's, often)
        why = (
            f"cannot create the cache folder {exc.filename or dest.parent} ({exc.strerror or exc})"
        )
        raise RemoteError(uri, why) from None
    remove_stale_parts(dest, stall_s)
    tmp = part_path(dest)
    beat = None if on_download is None else (lambda: on_download(True))

    def download() -> None:
        if beat is not None:
            beat()  # each try starts the stall clock again (a wait between tries is shorter)
        fetch(fs, path, tmp, stall_s=stall_s, beat=beat)

    try:
        fs, path = filesystem(uri, storage_options)
        retrying(download, uri, max_wait_s=min(MAX_WAIT_S, stall_s))
        got = tmp.stat().st_size
        if stat.size is not None and got < stat.size:
            raise RemoteError(uri, f"download incomplete ({got} of {stat.size} bytes)")
        if stat.size is not None and got > stat.size:
            why = f"{got} bytes arrived where its size was {stat.size}"
            raise RemoteError(
                uri, f"the object changed during the download, or its size is wrong ({why})"
            )
        os.replace(tmp, dest)
        remember(dest, stat)
    except FramepipeError:
        raise
    except Exception as exc:
        raise remote_error(uri, exc) from None
    finally:
        if on_download is not None:
            on_download(False)
        with contextlib.suppress(OSError):
            tmp.unlink()
    log.debug("%s: staged to %s (%s bytes)", uri, dest, stat.size)
    return dest


def remember(dest: Path, stat: RemoteStat) -> None:
    """Record beside ``dest`` that it holds the object ``stat`` describes (see
    :func:`stage`: it is then used again while the object is unchanged)."""
    meta = dest.with_name(dest.name + META_SUFFIX)
    meta_tmp = meta.with_name(f".{meta.name}.{uuid.uuid4().hex[:12]}.part")
    meta_tmp.write_text(json.dumps(stat.fingerprint()), encoding="utf-8")
    os.replace(meta_tmp, meta)


IN_USE = ".in-use"
"""The cache's folder of copies staged for one use (see :func:`stage_for_use`)."""


def stage_for_use(
    uri: str,
    dest: Path,
    stat: RemoteStat,
    *,
    keep: bool,
    storage_options: dict[str, Any] | None = None,
    stall_s: float = DEFAULT_STALL_S,
    on_download: Callable[[bool], None] | None = None,
) -> tuple[Path, bool]:
    """Stage ``uri`` for one input's decoding: at ``dest`` (:func:`stage`) when ``keep`` or
    when ``dest`` already holds the current object; else to a copy of its own,
    ``<cache>/.in-use/<unique>/<file name>``, so that no other use of the URI (another
    worker, a second manifest row) ever loses it. Returns the path and whether it is such a
    copy, which the caller removes with :func:`discard` once it is closed (``stall_s`` and
    ``on_download``: see :func:`stage`)."""
    kw: dict[str, Any] = {"storage_options": storage_options, "stall_s": stall_s}
    kw["on_download"] = on_download
    if keep or _cached(dest, stat):
        return stage(uri, dest, stat=stat, **kw), False
    own = dest.parent.parent / IN_USE / uuid.uuid4().hex[:16] / dest.name
    try:
        return stage(uri, own, stat=stat, **kw), True
    except BaseException:
        discard(own)  # its folder, made before the download failed
        raise


def discard(copy: Path) -> None:
    """Remove a copy staged for one use: the file, what is recorded beside it, its folder."""
    for path in (copy, copy.with_name(copy.name + META_SUFFIX)):
        with contextlib.suppress(OSError):
            path.unlink()
    with contextlib.suppress(OSError):
        copy.parent.rmdir()
