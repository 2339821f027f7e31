"""Views per second of the render source, against Open3D's OffscreenRenderer, in one run.

Generates (in a temporary folder) a ~70,000-triangle mesh (a bumpy sphere with vertex
colours) and a ~300,000-point cloud sampled from it, then renders 384x384 views:

- ``raycast``: the default CPU renderer (Open3D RaycastingScene, numpy shading/splats);
- ``raycast, supersample=2``: the same with 2x2 anti-aliasing;
- ``filament``: Open3D's OffscreenRenderer (EGL; on this machine Mesa's software stack)
  through framepipe's isolated subprocess; its per-view figure excludes process start-up
  and loading (the difference between a run of 1 + k views and a run of 1 view).

Prints a markdown table. Run: ``python benchmarks/bench_render.py [--views 48] [--no-filament]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_mesh(folder: Path, triangles: int = 70000) -> Path:
    import open3d

    o3d: Any = open3d
    res = round(float(np.sqrt(triangles / 4.0)))
    m = o3d.geometry.TriangleMesh.create_sphere(1.0, res)
    v = np.asarray(m.vertices)
    theta = np.arctan2(v[:, 1], v[:, 0])
    phi = np.arccos(np.clip(v[:, 2], -1, 1))
    r = 1.0 + 0.12 * np.sin(5 * theta) * np.sin(4 * phi)
    m.vertices = o3d.utility.Vector3dVector(v * r[:, None])
    m.vertex_colors = o3d.utility.Vector3dVector(np.clip((v * r[:, None] + 1) / 2, 0, 1))
    m.compute_vertex_normals()
    path = folder / "bumpy.ply"
    o3d.io.write_triangle_mesh(str(path), m)
    return path


def make_cloud(mesh_path: Path, points: int = 300000) -> Path:
    import open3d

    o3d: Any = open3d
    m = o3d.io.read_triangle_mesh(str(mesh_path))
    pc = (
        m.sample_points_uniformly(points, seed=0)
        if _has_seed()
        else m.sample_points_uniformly(points)
    )
    path = mesh_path.parent / "cloud.ply"
    o3d.io.write_point_cloud(str(path), pc)
    return path


def _has_seed() -> bool:
    import open3d

    o3d: Any = open3d
    return "seed" in (o3d.geometry.TriangleMesh.sample_points_uniformly.__doc__ or "")


def time_views(path: Path, views: int, **opts: object) -> tuple[float, float, float]:
    """(seconds to open + first view, views/s over the next ``views`` views, CPU s/view).

    CPU seconds are this process's, summed over its threads: on a machine that other work
    loads, wall-clock views/s drop while CPU seconds per view stay near their true cost.
    """
    from framepipe.sources.render.source import RenderSource

    t0 = time.perf_counter()
    src = RenderSource(path, num_views=views + 1, **opts)  # type: ignore[arg-type]
    src.read([0])
    t1 = time.perf_counter()
    c1 = time.process_time()
    for i in range(1, views + 1):
        src.read([i])
    t2 = time.perf_counter()
    c2 = time.process_time()
    return t1 - t0, views / (t2 - t1), (c2 - c1) / views


def time_filament(path: Path, views: int, tries: int = 4) -> tuple[float, ...] | str:
    """(seconds of the child process, views/s from the 2nd frame on, nan) or why it failed.

    Runs Open3D's OffscreenRenderer through framepipe's isolated child process, which
    times each frame itself (the first frame includes shader compilation and is left out
    of views/s). A run that hangs (lavapipe sometimes never returns the first frame) is
    killed after 120 s and tried again, up to ``tries`` runs.
    """
    import json
    import subprocess
    import sys

    from framepipe.sources.render.source import RenderSource

    src = RenderSource(path, num_views=views + 1)
    src.info()
    poses = src._poses_file if src._poses_file is not None else np.zeros((0, 4, 4))
    hangs = 0
    with tempfile.TemporaryDirectory(prefix="bench-filament-") as tmp:
        job = {
            "path": str(path.resolve()),
            "poses_c2w": [p.tolist() for p in poses],
            "intrinsics": src.intrinsics.to_json(),
            "background": [1.0, 1.0, 1.0],
            "point_size_px": 2.0,
            "out": str(Path(tmp) / "frames.npy"),
            "timings": str(Path(tmp) / "timings.json"),
        }
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        timings = Path(tmp) / "timings.json"
        env = {**os.environ, "EGL_PLATFORM": "surfaceless"}
        cmd = [
            sys.executable,
            "-m",
            "framepipe.sources.render.filament",
            str(Path(tmp) / "job.json"),
        ]
        for _ in range(tries):
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, timeout=120, env=env, check=False)
            except subprocess.TimeoutExpired:
                hangs += 1
                continue
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                return f"failed: exit {proc.returncode}"
            times = json.loads(timings.read_text())
            rate = (len(times) - 1) / sum(times[1:])
            return wall, rate, float("nan"), float(hangs)
    return f"failed: {hangs} run(s) hung (killed after 120 s each)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=48, help="views timed per row [48]")
    ap.add_argument("--filament-views", type=int, default=8, help="views for filament [8]")
    ap.add_argument("--no-filament", action="store_true", help="skip the OffscreenRenderer row")
    args = ap.parse_args()

    import open3d

    o3d: Any = open3d
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        mesh = make_mesh(Path(tmp))
        cloud = make_cloud(mesh)
        ntri = len(o3d.io.read_triangle_mesh(str(mesh)).triangles)
        npts = len(o3d.io.read_point_cloud(str(cloud)).points)
        rows: list[tuple[str, ...]] = []
        ray_mesh = time_views(mesh, args.views)
        rows.append((f"mesh {ntri:,} tris", "raycast", *_fmt(ray_mesh)))
        rows.append(
            (
                f"mesh {ntri:,} tris",
                "raycast supersample=2",
                *_fmt(time_views(mesh, 12, supersample=2)),
            )
        )
        ray_cloud = time_views(cloud, args.views)
        rows.append((f"cloud {npts:,} pts", "splats", *_fmt(ray_cloud)))
        fil_mesh: tuple[float, ...] | str | None = None
        fil_cloud: tuple[float, ...] | str | None = None
        if not args.no_filament:
            fil_mesh = time_filament(mesh, args.filament_views)
            rows.append((f"mesh {ntri:,} tris", *_fil_row(fil_mesh)))
            fil_cloud = time_filament(cloud, args.filament_views)
            rows.append((f"cloud {npts:,} pts", *_fil_row(fil_cloud)))

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"384x384 views; {os.cpu_count()} CPUs; open3d {o3d.__version__}; "
        f"python {platform.python_version()}; load average {load[0]:.2f} {load[1]:.2f}"
    )
    print()
    print("| input | renderer | open + first view (s) | views/s (wall) | CPU s/view |")
    # filament: "open + first view" is the whole child process (start, load, all frames)
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {' | '.join(r)} |")
    if isinstance(fil_mesh, tuple):
        print()
        print(f"raycast / filament on the mesh: {ray_mesh[1] / fil_mesh[1]:.1f}x views/s")
    if isinstance(fil_cloud, tuple):
        print(f"splats / filament on the cloud: {ray_cloud[1] / fil_cloud[1]:.1f}x views/s")


def _fil_row(res: tuple[float, ...] | str) -> tuple[str, ...]:
    name = "filament (OffscreenRenderer, child process)"
    if isinstance(res, str):
        return name, "-", res, "-"
    hangs = f" ({int(res[3])} hung run(s) retried)" if res[3] else ""
    return (f"{name}{hangs}", *_fmt((res[0], res[1], res[2])))


def _fmt(t: tuple[float, float, float]) -> tuple[str, str, str]:
    rate = f"{t[1]:.1f}" if t[1] >= 1 else f"{t[1]:.2f}"
    cpu = "-" if t[2] != t[2] else f"{t[2]:.3f}"
    return f"{t[0]:.2f}", rate, cpu


if __name__ == "__main__":
    main()
