"""Models in world coordinates (CAD, scans: far from the origin, or in huge or tiny units)
render framed and centred, the same as the model at the origin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from test_render import write_textured_quad_obj  # tests/sources is on the path

from framepipe.sources.render.source import RenderSource


def torus() -> tuple[np.ndarray, np.ndarray]:
    mesh = o3d.geometry.TriangleMesh.create_torus(torus_radius=1.0, tube_radius=0.4)
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)


def write_obj(path: Path, vertices: np.ndarray, triangles: np.ndarray) -> Path:
    """Full float64 precision, as CAD and scanning tools write world coordinates."""
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in vertices.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in triangles.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return path


def frames(path: Path) -> np.ndarray:
    return RenderSource(path, num_views=8, size=96).read([0, 2, 5]).frames


@pytest.mark.parametrize(
    "name, move",
    [
        ("shift_1e4", lambda v: v + 1e4),
        ("shift_1e6", lambda v: v + 1e6),
        ("shift_far", lambda v: v + np.array([3e7, -2e8, 5e6])),
        ("scale_1e5", lambda v: v * 1e5),
        ("scale_1e-5", lambda v: v * 1e-5),
        ("scaled_and_far", lambda v: v * 1e-3 + 1e5),
    ],
)
def test_obj_far_from_the_origin_renders_like_the_same_obj_at_the_origin(
    tmp_path: Path, name: str, move: Callable[[np.ndarray], np.ndarray]
) -> None:
    v, t = torus()
    ref = frames(write_obj(tmp_path / "origin.obj", v, t))
    got = frames(write_obj(tmp_path / f"{name}.obj", move(v), t))
    assert (ref != 255).any(axis=-1).mean() > 0.2  # the object fills the frames
    diff = np.abs(ref.astype(np.int16) - got.astype(np.int16))
    assert float(diff.mean()) < 0.05 and float((diff > 8).mean()) < 0.001


def test_textured_obj_far_from_the_origin_keeps_its_texture(tmp_path: Path) -> None:
    out = []
    for name, shift in (("origin", 0.0), ("far", 3e7)):
        path = write_textured_quad_obj(tmp_path / name)
        text = [
            "v " + " ".join(repr(float(x) + shift) for x in line.split()[1:4])
            if line.startswith("v ")
            else line
            for line in path.read_text().splitlines()
        ]
        path.write_text("\n".join(text) + "\n")
        src = RenderSource(path, num_views=4, size=64, up="z")
        assert src.info().extra["textured"]
        out.append(src.read([0, 1]).frames)
    assert np.array_equal(out[0], out[1])
