"""Checks for glTF 2.0 (.gltf and .glb): every buffer, buffer view and accessor a mesh needs is
there and in range, before Open3D (Assimp) reads the file and reports any of these as "no
geometry". Each problem is one SourceError naming the buffer, view or accessor. Buffers are
checked by their size; only data: URIs (already in memory) are decoded."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from framepipe.errors import SourceError

_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_TYPE_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_GLB_JSON = 0x4E4F534A
_GLB_BIN = 0x004E4942


def check_gltf(path: Path) -> None:
    """SourceError for the first broken buffer, buffer view or accessor of a .gltf/.glb."""
    doc, glb_bin = _read_document(path)
    sizes = [_buffer_size(path, i, b, glb_bin) for i, b in enumerate(_items(path, doc, "buffers"))]
    views = _items(path, doc, "bufferViews")
    for j, view in enumerate(views):
        i = _index(path, view, "buffer", len(sizes), f"buffer view {j}", required=True)
        start = _count(path, view, "byteOffset", f"buffer view {j}")
        end = start + _count(path, view, "byteLength", f"buffer view {j}")
        if end > sizes[i]:
            raise SourceError(
                path,
                f"buffer view {j} (bytes {start}..{end}) is out of range of buffer {i} "
                f"({sizes[i]} bytes)",
            )
    accessors = _items(path, doc, "accessors")
    for k, acc in enumerate(accessors):
        _check_accessor(path, k, acc, views)
    for m, mesh in enumerate(_items(path, doc, "meshes")):
        for p, prim in enumerate(mesh.get("primitives") or []):
            what = f"mesh {m} primitive {p}"
            if not isinstance(prim, dict):
                raise SourceError(path, f"{what} is not an object")
            attrs = prim.get("attributes") or {}
            if not isinstance(attrs, dict):
                raise SourceError(path, f"{what} attributes are not an object")
            for name, ref in attrs.items():
                _index(path, {name: ref}, name, len(accessors), what, required=True)
            _index(path, prim, "indices", len(accessors), what)


def _read_document(path: Path) -> tuple[dict[str, Any], int | None]:
    """The JSON document, and the length of a .glb's BIN chunk (None: no chunk or .gltf)."""
    data = path.read_bytes()
    glb_bin = None
    if data[:4] == b"glTF":
        if len(data) < 20:
            raise SourceError(path, f"truncated binary glTF ({len(data)} bytes)")
        _, _, total = struct.unpack_from("<III", data, 0)
        if total > len(data):
            raise SourceError(path, f"truncated binary glTF: {len(data)} of {total} bytes")
        json_len, kind = struct.unpack_from("<II", data, 12)
        if kind != _GLB_JSON or 20 + json_len > len(data):
            raise SourceError(path, "bad binary glTF: no complete JSON chunk")
        text = data[20 : 20 + json_len]
        at = 20 + json_len
        if at + 8 <= len(data):
            bin_len, kind = struct.unpack_from("<II", data, at)
            if kind == _GLB_BIN:
                glb_bin = min(bin_len, len(data) - at - 8)
    else:
        text = data
    try:
        doc = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SourceError(path, f"not a glTF file (bad JSON: {exc})") from None
    if not isinstance(doc, dict):
        raise SourceError(path, "not a glTF file (the JSON is not an object)")
    return doc, glb_bin


def _items(path: Path, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc.get(key, [])
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise SourceError(path, f"bad glTF: {key} is not a list of objects")
    return items


def _count(path: Path, item: dict[str, Any], key: str, what: str) -> int:
    value = item.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SourceError(path, f"{what} has a bad {key} ({value!r})")
    return value


def _index(
    path: Path, item: dict[str, Any], key: str, n: int, what: str, *, required: bool = False
) -> int:
    value = item.get(key)
    if value is None and not required:
        return -1
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
        raise SourceError(path, f"{what} {key} ({value!r}) is out of range (0..{n - 1})")
    return value


def _buffer_size(path: Path, i: int, buf: dict[str, Any], glb_bin: int | None) -> int:
    """The declared byteLength of buffer ``i``, after checking its data holds that many."""
    length = _count(path, buf, "byteLength", f"buffer {i}")
    uri = buf.get("uri")
    if uri is None:
        have, where = glb_bin, "the .glb's BIN chunk"
        if have is None:
            raise SourceError(path, f"buffer {i} has no uri and the file has no BIN chunk")
    elif not isinstance(uri, str):
        raise SourceError(path, f"buffer {i} has a bad uri ({uri!r})")
    elif uri.startswith("data:"):
        head, sep, payload = uri.partition(",")
        if not sep or not head.endswith(";base64"):
            raise SourceError(path, f"buffer {i} has a bad data: URI (not base64)")
        try:
            have = len(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            raise SourceError(path, f"buffer {i} has a bad data: URI (invalid base64)") from None
        where = "its data: URI"
    else:
        name = uri if len(uri) <= 80 else uri[:77] + "..."
        if "://" in uri:
            raise SourceError(path, f"buffer {i} {name!r} is not a local file")
        file = path.parent / unquote(uri)
        if not file.is_file():
            raise SourceError(path, f"buffer {i} {name!r} not found")
        have, where = file.stat().st_size, repr(name)
    if have < length:
        raise SourceError(path, f"buffer {i} is truncated: {where} holds {have} of {length} bytes")
    return length


def _check_accessor(path: Path, k: int, acc: dict[str, Any], views: list[dict[str, Any]]) -> None:
    what = f"accessor {k}"
    count = _count(path, acc, "count", what)
    size = _COMPONENT_BYTES.get(acc.get("componentType"))  # type: ignore[arg-type]
    comps = _TYPE_COMPONENTS.get(acc.get("type"))  # type: ignore[arg-type]
    if size is None or comps is None:
        raise SourceError(
            path,
            f"{what} has a bad componentType/type ({acc.get('componentType')!r}, "
            f"{acc.get('type')!r})",
        )
    j = _index(path, acc, "bufferView", len(views), what)
    if j < 0 or count == 0:
        return  # all zeros (or sparse only): nothing to read
    view = views[j]
    elem = size * comps
    stride = _count(path, view, "byteStride", f"buffer view {j}") or elem
    need = _count(path, acc, "byteOffset", what) + stride * (count - 1) + elem
    have = _count(path, view, "byteLength", f"buffer view {j}")
    if need > have:
        raise SourceError(
            path,
            f"{what} ({count} x {acc.get('type')}) needs {need} bytes but buffer view {j} "
            f"holds {have}",
        )
