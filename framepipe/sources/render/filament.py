"""Open3D's Filament ``OffscreenRenderer`` in a separate process, with a time limit.

The offscreen renderer needs a working EGL (or Vulkan) stack; on headless servers it often
fails, hangs or kills the process that created it. So it never runs in the caller's
process: :func:`render_isolated` writes a job file, runs ``python -m
framepipe.sources.render.filament JOB`` with a timeout and reads the frames back. Any failure
raises :class:`FilamentError`, and the render source falls back to ray casting.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import FramepipeError
from framepipe.sources.render.cameras import Intrinsics

log = logging.getLogger(__name__)

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


class FilamentError(FramepipeError):
    """The Filament renderer failed, crashed or timed out (the caller falls back)."""


class FilamentTimeout(FilamentError):
    """The renderer process did not finish in time (it was killed)."""


def render_isolated(
    path: Path,
    poses_c2w: list[np.ndarray],
    intr: Intrinsics,
    *,
    background: np.ndarray,
    point_size_px: float = 2.0,
    timeout_s: float = 60.0,
    attempts: int = 2,
) -> list[np.ndarray]:
    """Render ``path`` from each camera-to-world pose (file coordinates, OpenGL convention).

    A run that times out is tried again up to ``attempts`` times in all: on Mesa's software
    Vulkan (lavapipe) the first frame sometimes never comes back, at random.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _render_once(path, poses_c2w, intr, background, point_size_px, timeout_s)
        except FilamentTimeout:
            if attempt == attempts:
                raise
            log.info("%s: filament renderer timed out; trying again", path)
    raise AssertionError("unreachable")  # pragma: no cover


def _render_once(
    path: Path,
    poses_c2w: list[np.ndarray],
    intr: Intrinsics,
    background: np.ndarray,
    point_size_px: float,
    timeout_s: float,
) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="framepipe-filament-") as tmp:
        job = {
            "path": str(Path(path).resolve()),
            "poses_c2w": [np.asarray(p, dtype=np.float64).tolist() for p in poses_c2w],
            "intrinsics": intr.to_json(),
            "background": [float(c) / 255.0 for c in background],
            "point_size_px": float(point_size_px),
            "out": str(Path(tmp) / "frames.npy"),
        }
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        env = dict(os.environ)
        env.setdefault("EGL_PLATFORM", "surfaceless")  # headless Mesa (llvmpipe / lavapipe)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "framepipe.sources.render.filament", str(job_path)],
                capture_output=True,
                timeout=timeout_s,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise FilamentTimeout(f"timed out after {timeout_s:g} s") from exc
        except OSError as exc:
            raise FilamentError(f"cannot start the renderer process: {exc}") from exc
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise FilamentError(f"renderer process exited with {proc.returncode}: {tail[0][:200]}")
        try:
            frames = np.load(str(job["out"]))
        except (OSError, ValueError) as exc:
            raise FilamentError(f"renderer process wrote no frames: {exc}") from exc
    if frames.shape != (len(poses_c2w), intr.height, intr.width, 3) or frames.dtype != np.uint8:
        raise FilamentError(f"renderer process wrote frames of shape {frames.shape}")
    if len(frames) and all(np.ptp(f) == 0 for f in frames):
        raise FilamentError("renderer produced blank images")
    return list(frames)


def _render_job(job: dict[str, Any]) -> np.ndarray:
    """Runs in the child process."""
    import open3d

    o3d: Any = open3d
    rendering: Any = open3d.visualization.rendering

    from framepipe.sources.render.geometry import guess_is_mesh

    path = Path(job["path"])
    intr = job["intrinsics"]
    w, h = int(intr["width"]), int(intr["height"])
    r = rendering.OffscreenRenderer(w, h)
    scene = r.scene
    scene.set_background([*job["background"], 1.0])
    scene.view.set_post_processing(False)  # no tone mapping: the background stays exact
    if guess_is_mesh(path):
        if path.suffix.lower() in (".obj", ".glb", ".gltf"):
            model = o3d.io.read_triangle_model(str(path))
            scene.add_model("model", model)
        else:
            mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=True)
            if not mesh.has_vertex_normals():
                mesh.compute_vertex_normals()
            mat = rendering.MaterialRecord()
            mat.shader = "defaultLit"
            scene.add_geometry("mesh", mesh, mat)
    else:
        pc = o3d.io.read_point_cloud(str(path))
        pc = pc.remove_non_finite_points()
        mat = rendering.MaterialRecord()
        mat.shader = "defaultUnlit"
        mat.point_size = float(job["point_size_px"])
        scene.add_geometry("cloud", pc, mat)
    scene.scene.set_sun_light([-0.3, -1.0, -0.5], [1.0, 1.0, 1.0], 60000)
    scene.scene.enable_sun_light(True)
    k = np.array([[intr["fx"], 0.0, intr["cx"]], [0.0, intr["fy"], intr["cy"]], [0.0, 0.0, 1.0]])
    frames = np.empty((len(job["poses_c2w"]), h, w, 3), np.uint8)
    times: list[float] = []
    for i, c2w in enumerate(job["poses_c2w"]):
        t0 = time.perf_counter()
        w2c_cv = _GL_TO_CV @ np.linalg.inv(np.asarray(c2w, dtype=np.float64))
        r.setup_camera(k, w2c_cv, w, h)
        img = np.asarray(r.render_to_image())
        frames[i] = img[:, :, :3]
        times.append(time.perf_counter() - t0)
    if job.get("timings"):  # seconds per frame, for benchmarks
        Path(job["timings"]).write_text(json.dumps(times))
    return frames


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    frames = _render_job(job)
    np.save(job["out"], frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
