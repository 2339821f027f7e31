"""Checks for the 3D formats other than PLY (see :mod:`.check_ply`): OFF and PCD headers
against their bodies, OBJ face indices, text formats without NUL bytes, binary STL length,
the .glb magic, and sparse or zero-filled files, each a one-line SourceError, with bounded
work."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from framepipe.errors import SourceError

_ASCII_MAX_BYTES = 1 << 31
_TEXT_FORMATS = {".obj": "OBJ", ".xyz": "XYZ", ".pts": "PTS", ".gltf": "glTF"}
_SPARSE_MIN = 16 << 20
"""Files at least this large are checked for holes and zero-filled data."""


def check_filled(path: Path, size: int) -> None:
    """A large file that is mostly a hole (``truncate -s 500M``) or zeros holds no model."""
    if size < _SPARSE_MIN:
        return
    with open(path, "rb") as fh:
        fd = fh.fileno()
        data, pos = 0, 0
        try:
            for _ in range(1000):
                start = os.lseek(fd, pos, os.SEEK_DATA)
                end = os.lseek(fd, start, os.SEEK_HOLE)
                data += end - start
                pos = end
                if pos >= size:
                    break
        except (OSError, AttributeError):  # no data after pos (ENXIO), or no SEEK_DATA
            pass
        else:
            if pos < size:
                data = size  # too many pieces to count: not the hostile case
        if data < 0.1 * size:
            raise SourceError(path, f"sparse file: {data} of {size} bytes hold data")
        blocks = []
        for k in range(1, 9):
            fh.seek(size * k // 9)
            blocks.append(fh.read(4096))
        if not any(b.strip(b"\x00") for b in blocks):
            raise SourceError(path, "the data is all zeros (8 samples across the file)")


_OFF_KEYS = re.compile(rb"^(ST)?C?N?4?n?OFF")


def check_off(path: Path) -> tuple[int, int]:
    """``(vertices, faces)`` an OFF header declares; SourceError unless the body holds a
    line for each."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if b"\x00" in head or not _OFF_KEYS.match(head.lstrip()):
        raise SourceError(path, "not an OFF file (bad header)")
    text = head.decode("ascii", errors="replace")
    toks: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        toks += line.split()
        if len(toks) >= 4:
            break
    try:
        first = 2 if toks[0].endswith("nOFF") else 1  # nOFF: a dimension comes first
        nv, nf = int(toks[first]), int(toks[first + 1])
    except (ValueError, IndexError):
        raise SourceError(path, "not an OFF file (bad counts line)") from None
    if nv < 0 or nf < 0:
        raise SourceError(path, f"bad OFF counts ({nv} vertices, {nf} faces)")
    size = path.stat().st_size
    if (nv + nf) * 2 > size or size > _ASCII_MAX_BYTES:
        raise SourceError(
            path, f"truncated: the header declares {nv} vertices and {nf} faces in {size} bytes"
        )
    header_lines = 1 if len(toks) > 2 and not toks[0].endswith("nOFF") else 2
    lines = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.split(b"#", 1)[0].strip():
                lines += 1
    if lines - header_lines < nv + nf:
        raise SourceError(
            path,
            f"truncated: the header declares {nv} vertices and {nf} faces, "
            f"the file holds {max(0, lines - header_lines)} data lines",
        )
    return nv, nf


def obj_face_problem(path: Path) -> str | None:
    """Why an OBJ with faces gave no mesh (a face index out of range), None when it has none."""
    nv = 0
    faces = 0
    top = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.startswith(b"v "):
                nv += 1
            elif raw.startswith(b"f "):
                faces += 1
                for tok in raw.split()[1:]:
                    try:
                        i = int(tok.split(b"/")[0])
                    except ValueError:
                        return f"face {faces} has a bad index {tok[:20].decode(errors='replace')!r}"
                    if i == 0 or (i < 0 and -i > nv):
                        return f"face {faces} uses vertex {i} of {nv} before it"
                    top = max(top, i)
    if top > nv:
        return f"a face uses vertex {top} but the file has {nv} vertices"
    return f"Open3D read none of its {faces} faces" if faces else None


def check_other(path: Path, ext: str) -> None:
    """Cheap checks for the formats without a header with counts: text formats hold no NUL
    bytes, a binary STL is exactly as long as its triangle count says, a .glb starts with
    its magic (a sparse or garbage file fails here, before a reader walks it)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if ext in _TEXT_FORMATS:
        if b"\x00" in head:
            raise SourceError(
                path, f"no geometry: not a text {_TEXT_FORMATS[ext]} file (NUL bytes)"
            )
    elif ext == ".glb":
        if not head.startswith(b"glTF"):
            raise SourceError(path, "not a binary glTF file (no glTF magic)")
    elif ext == ".stl" and not (head.lstrip().startswith(b"solid") and b"\x00" not in head):
        size = path.stat().st_size
        if size < 84:
            raise SourceError(path, f"not an STL file ({size} bytes)")
        count = int(np.frombuffer(head[80:84], "<u4")[0])
        if size != 84 + 50 * count:
            raise SourceError(
                path, f"bad binary STL: {count} triangles declared, {(size - 84) // 50} held"
            )
        if count == 0:
            raise SourceError(path, "binary STL with no triangles")


def pcd_header_fields(lines: Iterable[str]) -> tuple[dict[str, list[str]], int]:
    """A PCD header's ``KEY values...`` lines (keys upper-cased, ``#`` comments skipped) up to
    and including ``DATA``, and how many lines that took (0: no DATA line in ``lines``)."""
    fields: dict[str, list[str]] = {}
    for n, line in enumerate(lines, 1):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        fields[tok[0].upper()] = tok[1:]
        if tok[0].upper() == "DATA":
            return fields, n
    return fields, 0


def check_pcd(path: Path) -> int | None:
    """Points a PCD header declares; SourceError unless the body holds them all (ASCII: a
    line per point, binary: the bytes). None when the header cannot be parsed here (Open3D
    then decides) or the data is compressed."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    raws = head.splitlines(keepends=True)
    fields, n = pcd_header_fields(raw.decode("ascii", errors="replace") for raw in raws)
    if not n:
        raise SourceError(path, "not a PCD file (no DATA line in its header)")
    offset = sum(len(raw) for raw in raws[:n])
    try:
        points = int(fields["POINTS"][0])
        data = fields["DATA"][0].lower()
        counts = fields.get("COUNT", ["1"] * len(fields.get("SIZE", [])))
        row = sum(int(s) * int(c) for s, c in zip(fields.get("SIZE", []), counts))
    except (KeyError, IndexError, ValueError):
        return None
    if points < 0:
        raise SourceError(path, f"bad PCD: POINTS {points}")
    size = path.stat().st_size
    if data == "binary":
        if row <= 0:
            return None
        have = (size - offset) // row
        if have < points:
            raise SourceError(path, f"truncated: {have} of {points} points")
    elif data == "ascii":
        if points * 2 > size - offset or size > _ASCII_MAX_BYTES:
            raise SourceError(path, f"truncated: {points} points declared in {size} bytes")
        width = len(fields.get("FIELDS", []))
        lines = 0
        with open(path, "rb") as fh:
            fh.seek(offset)
            if b"\x00" in fh.read(65536):
                raise SourceError(path, "not ASCII PCD data (NUL bytes after the header)")
            fh.seek(offset)
            for raw in fh:
                values = len(raw.split())
                if values:
                    if values < width:
                        raise SourceError(
                            path, f"bad PCD: point {lines} has {values} of {width} values"
                        )
                    lines += 1
        if lines < points:
            raise SourceError(path, f"truncated: {lines} of {points} points")
    else:
        return None
    return points
