"""glTF files whose buffers are broken: each fails as one line naming the file and which
buffer, buffer view or accessor is wrong (Open3D alone says only "no geometry")."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_render import write_glb  # tests/sources is on the path (no __init__.py)

from framepipe.errors import SourceError
from framepipe.sources.render.source import RenderSource

POS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
IDX = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])


def broken_gltf(tmp_path: Path, name: str, change: Callable[[dict[str, Any], bytes], None]) -> Path:
    good = write_glb(tmp_path / "good.gltf", POS, IDX)
    doc = json.loads(good.read_text())
    raw = base64.b64decode(doc["buffers"][0]["uri"].split(",", 1)[1])
    change(doc, raw)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def failure(path: Path) -> str:
    with pytest.raises(SourceError) as exc:
        RenderSource(path, size=32, num_views=2).info()
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg[len(str(path)) + 2 :]


def test_broken_gltf_buffers_fail_naming_the_buffer_and_the_problem(tmp_path: Path) -> None:
    def missing(doc: dict[str, Any], raw: bytes) -> None:
        doc["buffers"][0]["uri"] = "model.bin"

    def truncated(doc: dict[str, Any], raw: bytes) -> None:
        (tmp_path / "short.bin").write_bytes(raw[:20])
        doc["buffers"][0]["uri"] = "short.bin"

    def bad_data(doc: dict[str, Any], raw: bytes) -> None:
        doc["buffers"][0]["uri"] = "data:application/octet-stream;base64,@@not base64@@"

    def view_out_of_range(doc: dict[str, Any], raw: bytes) -> None:
        doc["bufferViews"][0]["byteOffset"] = 100000

    def count_too_large(doc: dict[str, Any], raw: bytes) -> None:
        doc["accessors"][0]["count"] = 1000000

    cases = {
        "model.gltf": (missing, "buffer 0 'model.bin' not found"),
        "short.gltf": (truncated, "buffer 0 is truncated: 'short.bin' holds 20 of 96 bytes"),
        "data uri.gltf": (bad_data, "buffer 0 has a bad data: URI (invalid base64)"),
        "view.gltf": (
            view_out_of_range,
            "buffer view 0 (bytes 100000..100048) is out of range of buffer 0 (96 bytes)",
        ),
        "count.gltf": (
            count_too_large,
            "accessor 0 (1000000 x VEC3) needs 12000000 bytes but buffer view 0 holds 48",
        ),
    }
    for name, (change, expected) in cases.items():
        assert failure(broken_gltf(tmp_path, name, change)) == expected


def test_truncated_glb_fails_naming_its_length(tmp_path: Path) -> None:
    good = write_glb(tmp_path / "good.glb", POS, IDX)
    data = good.read_bytes()
    bad = tmp_path / "cut.glb"
    bad.write_bytes(data[:-30])
    assert failure(bad) == f"truncated binary glTF: {len(data) - 30} of {len(data)} bytes"
    assert RenderSource(good, size=32, num_views=2).read([0]).frames.shape == (1, 32, 32, 3)
