"""Check 3D files before Open3D reads them, and keep Open3D's console output off stderr.

Open3D reports a failed PLY/OFF read with a printed warning and still returns what it read
so far: vertices from uninitialised memory when a header's count is wrong (different in
every process), the first faces of a truncated file, nothing from a garbage ``.off``. So the
header's counts are checked against the file here first, with bounded work (the file size
alone refutes a 500 MB sparse file whose header promises more than it holds), and each
problem becomes one deterministic :class:`~framepipe.errors.SourceError`. A general loader
does not replace these checks: trimesh 5.2 reads an ASCII PLY or OFF whose counts are wrong
as other geometry without a word, a truncated binary STL as an empty scene, and walks (or
reads into memory) every byte of a sparse file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import SourceError

log = logging.getLogger(__name__)

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_HEADER_MAX = 1 << 20
_WALK_MAX = 2_000_000
_ASCII_MAX_BYTES = 1 << 31
"""ASCII bodies larger than this are refused (counting their lines is the bounded work)."""


@dataclass
class PlyElement:
    name: str
    count: int
    props: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(name, numpy type code, the list's count type code or None)."""


@dataclass
class PlyHeader:
    fmt: str
    elements: list[PlyElement]
    body_offset: int

    def count(self, name: str) -> int:
        return sum(e.count for e in self.elements if e.name == name)


def read_ply_header(path: Path) -> PlyHeader | None:
    """The PLY header of ``path``, None when the file does not start like a PLY file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_MAX)
    except OSError as exc:
        raise SourceError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if not head.startswith(b"ply"):
        return None
    m = re.search(rb"end_header[ \t]*\r?\n", head)
    if m is None:
        raise SourceError(path, "not a PLY file (no end_header)")
    fmt = ""
    elements: list[PlyElement] = []
    for raw in head[: m.start()].decode("ascii", errors="replace").splitlines()[1:]:
        tok = raw.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        try:
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                elements.append(PlyElement(tok[1], int(tok[2])))
            elif tok[0] == "property" and elements:
                if tok[1] == "list":
                    item, count = _PLY_TYPES[tok[3]], _PLY_TYPES[tok[2]]
                    elements[-1].props.append((tok[4], item, count))
                else:
                    elements[-1].props.append((tok[2], _PLY_TYPES[tok[1]], None))
            else:
                raise ValueError(raw)
        except (IndexError, ValueError, KeyError):
            raise SourceError(path, f"bad PLY header line {raw.strip()[:60]!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise SourceError(path, f"bad PLY format {fmt or 'none'!r}")
    if any(e.count < 0 for e in elements):
        raise SourceError(path, "PLY header declares a negative count")
    return PlyHeader(fmt, elements, m.end())


def check_ply(path: Path, header: PlyHeader) -> None:
    """Raise SourceError unless the body holds every element the header declares."""
    size = path.stat().st_size
    body = size - header.body_offset
    if header.fmt == "ascii":
        _check_ascii_ply(path, header, body)
    else:
        _check_binary_ply(path, header, body, "<" if header.fmt.endswith("little_endian") else ">")


def _check_ascii_ply(path: Path, header: PlyHeader, body: int) -> None:
    need = sum(e.count for e in header.elements)
    if body > _ASCII_MAX_BYTES:
        raise SourceError(path, f"ASCII PLY body of {body} bytes is too large")
    if need * 2 > body:  # every element line holds at least one digit and a newline
        raise SourceError(
            path, f"truncated: the header declares {need} element lines, the body has {body} bytes"
        )
    lines = 0
    with open(path, "rb") as fh:
        fh.seek(header.body_offset)
        first = fh.read(65536)
        if b"\x00" in first:
            raise SourceError(path, "not ASCII PLY data (NUL bytes after the header)")
        fh.seek(header.body_offset)
        for line in fh:
            if line.strip():
                lines += 1
                if lines > need:
                    break
    if lines != need:
        what = ", ".join(f"{e.count} {_plural(e.name)}" for e in header.elements)
        held = f"more than {need}" if lines > need else str(lines)
        raise SourceError(
            path, f"bad PLY: its header declares {need} lines ({what}), the body holds {held}"
        )


def _check_binary_ply(path: Path, header: PlyHeader, body: int, endian: str) -> None:
    offset = header.body_offset
    size = offset + body
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        try:
            for e in header.elements:
                offset = _walk_element(path, e, mm, offset, size, endian)
        finally:
            if mm is not None:
                mm.close()


def _walk_element(path: Path, e: PlyElement, mm: Any, offset: int, size: int, endian: str) -> int:
    """The offset after element ``e`` (count records from ``offset``); SourceError if short."""
    if e.count == 0:
        return offset
    lists = [p for p in e.props if p[2] is not None]
    fixed = sum(np.dtype(p[1]).itemsize for p in e.props if p[2] is None)
    if not lists:
        rec = fixed
        have = (size - offset) // rec if rec else e.count
        if have < e.count:
            raise SourceError(path, f"truncated: {have} of {e.count} {_plural(e.name)}")
        return offset + e.count * rec
    # the common case: one list whose length is the same in every record (triangles)
    name, item_t, count_t = lists[0]
    assert count_t is not None
    before = 0
    for p in e.props:
        if p[0] == name:
            break
        before += np.dtype(p[1]).itemsize
    ct = np.dtype(endian + count_t)
    if offset + before + ct.itemsize > size:
        raise SourceError(path, f"truncated: 0 of {e.count} {_plural(e.name)}")
    k = int(np.frombuffer(mm, ct, 1, offset + before)[0])
    if e.name == "face" and k < 3:
        raise SourceError(path, f"bad PLY: face 0 has {k} vertices")
    if len(lists) == 1 and 0 <= k <= 64:
        rec = fixed + ct.itemsize + k * np.dtype(item_t).itemsize
        have = (size - offset) // rec
        if have >= e.count:
            counts = np.ndarray((e.count,), ct, mm, offset + before, (rec,))
            if bool(np.all(counts == k)):
                return offset + e.count * rec
        else:
            counts = np.ndarray((have,), ct, mm, offset + before, (rec,))
            if bool(np.all(counts == k)):
                raise SourceError(path, f"truncated: {have} of {e.count} {_plural(e.name)}")
    return _walk_records(path, e, mm, offset, size, endian)


def _walk_records(path: Path, e: PlyElement, mm: Any, offset: int, size: int, endian: str) -> int:
    """Record by record (lists of varying length); bounded by the file's size and by
    ``_WALK_MAX`` records (beyond that Open3D reads and reports)."""
    if e.count > max(1, size - offset):
        raise SourceError(path, f"truncated: the file cannot hold {e.count} {_plural(e.name)}")
    if e.count > _WALK_MAX:
        return size
    for i in range(e.count):
        for _, t, count_t in e.props:
            if count_t is None:
                offset += np.dtype(t).itemsize
                continue
            ct = np.dtype(endian + count_t)
            if offset + ct.itemsize > size:
                raise SourceError(path, f"truncated: {i} of {e.count} {_plural(e.name)}")
            k = int(np.frombuffer(mm, ct, 1, offset)[0])
            if k < 0:
                raise SourceError(path, f"bad PLY: {e.name} {i} has a list of length {k}")
            offset += ct.itemsize + k * np.dtype(t).itemsize
        if offset > size:
            raise SourceError(path, f"truncated: {i} of {e.count} {_plural(e.name)}")
    return offset


def _plural(name: str) -> str:
    return {"vertex": "vertices"}.get(name, name + "s")


_FAILED = (re.compile(r"RPly: [^\n]*"), re.compile(r"Read \w+ failed[^\n]*"))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Captured:
    """What Open3D printed while reading (its warnings and its C libraries' messages)."""

    text: str = ""

    def failure(self) -> str | None:
        """The first line saying the read failed (Open3D still returns partial data)."""
        for pattern in _FAILED:  # RPly's says which value; Open3D's names only the file
            m = pattern.search(self.text)
            if m:
                return m.group(0).split(": unable to read file", 1)[0].strip()
        return None


def _flush_c_stdio() -> None:
    """Flush Python's stdout/stderr (Open3D's logger prints through Python) and C's."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # pragma: no cover - no C library to ask
        pass


@contextlib.contextmanager
def quiet_open3d(o3d: Any, path: Path) -> Iterator[Captured]:
    """Capture what Open3D prints while reading (its logger at warning level, RPly and
    Assimp) off stdout and stderr: the caller checks :meth:`Captured.failure`; the text
    goes to this module's debug log, nothing leaks onto the console."""
    old = o3d.utility.get_verbosity_level()
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Warning)
    got = Captured()
    with tempfile.TemporaryFile() as tmp:
        saved: list[tuple[int, int]] = []
        _flush_c_stdio()  # what was printed before is not ours
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
        except OSError:  # pragma: no cover - no such descriptor
            pass
        py_out = io.StringIO()  # Open3D's logger prints through Python's sys.stdout
        try:
            with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_out):
                yield got
        finally:
            _flush_c_stdio()  # flush buffered output into the capture
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            o3d.utility.set_verbosity_level(old)
            tmp.seek(0)
            text = py_out.getvalue() + tmp.read(65536).decode(errors="replace")
            got.text = _ANSI.sub("", text).strip()
            if got.text:
                log.debug("%s: Open3D printed: %s", path, " | ".join(got.text.splitlines()[:5]))
