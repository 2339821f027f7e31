"""3D files Open3D half-reads (issue 11.5): each one fails as one deterministic line naming
the file, quickly, with nothing printed on the console; absurd options are refused."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d
import pytest

from framepipe.errors import ConfigError, SourceError
from framepipe.sources.render.raycast import estimate_spacing
from framepipe.sources.render.source import RenderSource


def icosphere() -> Any:
    mesh = o3d.geometry.TriangleMesh.create_icosahedron().subdivide_midpoint(2)
    assert len(mesh.triangles) == 320
    return mesh


def failure(path: Path, **kw: Any) -> str:
    with pytest.raises(SourceError) as exc:
        RenderSource(path, size=32, num_views=2, **kw).info()
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def ascii_ply(tmp_path: Path, name: str, vertex_delta: int) -> Path:
    mesh = icosphere()
    good = tmp_path / "good_ascii.ply"
    assert o3d.io.write_triangle_mesh(str(good), mesh, write_ascii=True)
    n = len(mesh.vertices)
    text = good.read_text().replace(f"element vertex {n}\n", f"element vertex {n + vertex_delta}\n")
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("delta", [40, -10])
def test_ascii_ply_with_a_wrong_vertex_count_fails_the_same_way_every_time(
    tmp_path: Path, delta: int
) -> None:
    p = ascii_ply(tmp_path, f"wrong{delta}.ply", delta)
    msg = failure(p)
    assert "header declares" in msg
    assert failure(p) == msg
    # another process (Open3D's reader returned uninitialised memory there): the same line
    code = (
        "import sys; from framepipe.sources.render.source import RenderSource\n"
        "try:\n RenderSource(sys.argv[1]).info()\n"
        "except Exception as e: print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == msg


def test_truncated_binary_ply_names_what_is_missing(tmp_path: Path) -> None:
    mesh = icosphere()
    good = tmp_path / "good.ply"
    assert o3d.io.write_triangle_mesh(str(good), mesh, write_ascii=False)
    data = good.read_bytes()
    head = data.index(b"end_header\n") + len(b"end_header\n")
    vert_bytes = len(mesh.vertices) * 3 * 8  # Open3D writes double x, y, z
    face_bytes = 1 + 3 * 4
    assert len(data) == head + vert_bytes + 320 * face_bytes or b"double" not in data[:head]
    p = tmp_path / "truncated.ply"
    p.write_bytes(data[: head + vert_bytes + 78 * face_bytes + 5])
    assert "truncated: 78 of 320 faces" in failure(p)
    q = tmp_path / "no_faces_left.ply"
    q.write_bytes(data[: head + vert_bytes // 2])
    assert "truncated:" in failure(q) and "vertices" in failure(q)
    assert RenderSource(good, size=32, num_views=2).info().extra["num_triangles"] == 320


@pytest.mark.parametrize(
    "content",
    [
        b"OFF\nhello world\n1 2 3\n",
        b"\x00\x01\x02\x03 junk junk",
        b"OFF\n3 1 0\n0 0 0\n",  # promises 4 lines, holds 1
        b"COFF 99999999 99999999 0\n0 0 0\n",
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    ],
)
def test_garbage_off_fails(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "garbage.off"
    p.write_bytes(content)
    failure(p)


def test_obj_faces_out_of_range_fail_and_faceless_obj_says_points(tmp_path: Path) -> None:
    p = tmp_path / "out_of_range.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    assert "vertex 9" in failure(p) and "3 vertices" in failure(p)
    q = tmp_path / "negative.obj"
    q.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -1 -2 -5\n")
    failure(q)
    r = tmp_path / "points.obj"
    r.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n")
    info = RenderSource(r, size=32, num_views=2).info()
    assert info.extra["geometry"] == "points"
    assert any("no faces" in n and "points" in n for n in info.extra["notes"])


@pytest.mark.parametrize("fmt", ["binary_little_endian", "ascii"])
def test_sparse_500mb_ply_fails_fast(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"sparse_{fmt}.ply"
    p.write_bytes(
        f"ply\nformat {fmt} 1.0\nelement vertex 100000000\nproperty float x\n"
        "property float y\nproperty float z\nelement face 1000\n"
        "property list uchar int vertex_indices\nend_header\n".encode()
    )
    with open(p, "r+b") as fh:
        fh.truncate(500 * 2**20)  # sparse: no disk used
    t0 = time.perf_counter()
    msg = failure(p)
    assert time.perf_counter() - t0 < 5.0
    assert "sparse file" in msg or "truncated" in msg or "NUL" in msg


def test_declared_counts_beyond_any_file_fail_without_allocating(tmp_path: Path) -> None:
    p = tmp_path / "huge.ply"
    p.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 4000000000000\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n" + bytes(120)
    )
    assert "truncated: 10 of 4000000000000 vertices" in failure(p)
    bad = tmp_path / "badheader.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nelement vertex -3\nend_header\n")
    failure(bad)
    typo = tmp_path / "typo.ply"
    typo.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty flaot x\nend_header\n0\n")
    assert "bad PLY header line" in failure(typo)


def test_nothing_reaches_the_console(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    mesh = icosphere()
    good = tmp_path / "g.ply"
    assert o3d.io.write_triangle_mesh(str(good), mesh, write_ascii=False)
    data = good.read_bytes()
    (tmp_path / "t.ply").write_bytes(data[: len(data) - 200])
    (tmp_path / "o.obj").write_text("v 0 0 0\nf 1 2 3\n")
    (tmp_path / "x.off").write_bytes(b"OFF\n1 0 0\nnot a number here\n")
    capfd.readouterr()
    for name in ("t.ply", "o.obj", "x.off"):
        with pytest.raises(SourceError):
            RenderSource(tmp_path / name, size=32, num_views=2).info()
    out, err = capfd.readouterr()
    assert "Open3D" not in out + err and "RPly" not in out + err


def test_identical_points_do_not_make_the_spacing_search_crawl(tmp_path: Path) -> None:
    same = np.zeros((500_000, 3))
    rand = np.random.default_rng(0).random((500_000, 3))
    t0 = time.perf_counter()
    assert estimate_spacing(same) == pytest.approx(0.05)
    t_same = time.perf_counter() - t0
    t0 = time.perf_counter()
    estimate_spacing(rand)
    t_rand = time.perf_counter() - t0
    assert t_same < max(1.0, t_rand)  # before: about 30x the random cloud's time
    # the spacing of a cloud with many duplicates is the spacing of its distinct points
    grid = np.stack(np.meshgrid(*[np.arange(20.0) * 0.01] * 2), -1).reshape(-1, 2)
    flat = np.c_[grid, np.zeros(len(grid))]
    assert estimate_spacing(np.repeat(flat, 50, axis=0)) == pytest.approx(
        estimate_spacing(flat), rel=0.05
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"size": float("inf")},
        {"size": ["a", "b"]},
        {"size": 0},
        {"size": "1e300x5"},
        {"size": -384},
        {"num_views": float("inf")},
        {"num_views": 2.5},
        {"num_views": "many"},
        {"threads": -1},
        {"supersample": float("nan")},
        {"fov_deg": 1e300},
        {"fov_deg": -40},
        {"fill": float("nan")},
        {"elevation_deg": 1e300},
        {"filament_timeout_s": -1},
        {"point_size": float("inf")},
    ],
)
def test_absurd_options_are_one_line_config_errors(tmp_path: Path, kw: dict[str, Any]) -> None:
    p = tmp_path / "c.xyz"
    p.write_text("0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(ConfigError) as exc:
        RenderSource(p, **kw).info()
    assert "\n" not in str(exc.value) and next(iter(kw)) in str(exc.value)


def test_a_read_open3d_reports_as_failed_fails(tmp_path: Path) -> None:
    """Counts right, a value not a number: Open3D says the read failed and returns the
    vertices it allocated (uninitialised after the bad value)."""
    p = ascii_ply(tmp_path, "token.ply", 0)
    lines = p.read_text().split("\n")
    lines[lines.index("end_header") + 3] = "0.1 zz 0.3"
    p.write_text("\n".join(lines))
    assert "Open3D: " in failure(p) and "vertex" in failure(p)
    q = tmp_path / "token.off"
    q.write_text("OFF\n3 1 0\n0 0 0\n1 x 0\n0 1 0\n3 0 1 2\n")
    assert "Read OFF failed" in failure(q)


def test_truncated_and_short_pcd_fail(tmp_path: Path) -> None:
    pc = o3d.geometry.PointCloud(
        o3d.utility.Vector3dVector(np.random.default_rng(3).random((999, 3)))
    )
    for ascii_ in (False, True):
        good = tmp_path / f"good{ascii_}.pcd"
        assert o3d.io.write_point_cloud(str(good), pc, write_ascii=ascii_)
        data = good.read_bytes()
        cut = tmp_path / f"cut{ascii_}.pcd"
        cut.write_bytes(data[: len(data) // 3])
        assert "truncated" in failure(cut) or "values" in failure(cut)
        assert RenderSource(good, size=32, num_views=2).info().extra["num_points"] == 999
    short = tmp_path / "short.pcd"
    short.write_bytes(b"VERSION .7\nFIELDS x y z\nPOINTS 10\nDATA ascii\n1 2\n")
    failure(short)


SPARSE_HEADERS = {
    ".ply": b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n"
    b"property float y\nproperty float z\nelement face 400000000\n"
    b"property list uchar int vertex_indices\nend_header\n",
    ".pcd": b"VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 40000000\n"
    b"HEIGHT 1\nPOINTS 40000000\nDATA binary\n",
    ".off": b"OFF\n1000 1000 0\n",
    ".obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
    ".stl": b"solid x\n",
    ".xyz": b"0 0 0\n1 1 1\n",
    ".pts": b"2\n0 0 0\n1 1 1\n",
    ".glb": b"glTF\x02\x00\x00\x00",
    ".gltf": b'{"asset": {"version": "2.0"}}',
}


@pytest.mark.parametrize("ext", sorted(SPARSE_HEADERS))
@pytest.mark.parametrize("header", [True, False])
def test_sparse_files_of_every_format_fail_fast(tmp_path: Path, ext: str, header: bool) -> None:
    """``truncate -s 500M``, after a valid header or not: no reader walks 500 MB of zeros."""
    p = tmp_path / f"sparse{ext}"
    p.write_bytes(SPARSE_HEADERS[ext] if header else b"")
    with open(p, "r+b") as fh:
        fh.truncate(500 * 2**20)
    t0 = time.perf_counter()
    failure(p)
    assert time.perf_counter() - t0 < 5.0


def test_zero_filled_binary_cloud_fails(tmp_path: Path) -> None:
    """The same written out (no hole): sampled blocks are all zeros."""
    p = tmp_path / "zeros.pcd"
    with open(p, "wb") as fh:
        fh.write(SPARSE_HEADERS[".pcd"].replace(b"40000000", b"2000000"))
        fh.write(bytes(24 * 2**20))
    assert "all zeros" in failure(p)
