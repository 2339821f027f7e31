"""Make the bundled sample media (committed beside this script; run it to re-create them).

    python samples/make_samples.py [OUT_DIR]   # default: the folder of this script

Writes, deterministically:
- ``shots.mp4``: 6 s of 320x180 H.264 at 24 fps with four shots (three hard cuts and a
  dissolve), each shot a different moving scene;
- ``scene_cubes/``: a multi-view scene, 16 JPEG views of coloured boxes on a checkered floor
  from an orbit of cameras, with a NeRF-style ``transforms.json`` (camera-to-world poses);
- ``torus_knot.ply``: a small vertex-coloured triangle mesh (binary PLY).

Only numpy, Pillow and PyAV are needed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# --------------------------------------------------------------------------------------
# video


def _shot_frame(shot: int, t: float, w: int, h: int) -> np.ndarray:
    """One frame of shot ``shot`` at time ``t`` (seconds into the shot)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    palettes = [
        ((30, 60, 140), (240, 200, 40)),  # blue sky, yellow ball
        ((20, 110, 40), (230, 60, 50)),  # green field, red square
        ((110, 30, 110), (60, 220, 230)),  # purple, cyan stripes
        ((200, 120, 40), (30, 30, 30)),  # orange, dark circle
    ]
    bg, fg = palettes[shot]
    grad = (yy / h)[..., None]
    img = np.asarray(bg, np.float32) * (0.6 + 0.4 * grad)
    if shot == 0:  # a ball bouncing left to right
        cx, cy = 40 + 240 * (t / 1.5), 120 - 70 * abs(math.sin(t * 4))
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < 20**2
    elif shot == 1:  # a square rotating in the middle
        a = t * 2.0
        u = (xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)
        v = -(xx - w / 2) * math.sin(a) + (yy - h / 2) * math.cos(a)
        mask = (np.abs(u) < 35) & (np.abs(v) < 35)
    elif shot == 2:  # stripes panning
        mask = ((xx + 60 * t) // 20) % 2 == 0
    else:  # a circle growing
        mask = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (15 + 30 * t) ** 2
    img[mask] = fg
    return np.clip(img, 0, 255).astype(np.uint8)


def make_video(path: Path, *, w: int = 320, h: int = 180, fps: int = 24) -> None:
    import av

    shot_len = [36, 36, 36, 36]  # frames; 6 s in all
    dissolve = 12  # frames of dissolve between shot 2 and shot 3
    frames: list[np.ndarray] = []
    for shot, n in enumerate(shot_len):
        for k in range(n):
            frames.append(_shot_frame(shot, k / fps, w, h))
    # dissolve: blend the end of shot 2 into the start of shot 3
    start = sum(shot_len[:3]) - dissolve // 2
    for k in range(dissolve):
        a = (k + 1) / (dissolve + 1)
        t2 = (shot_len[2] - dissolve // 2 + k) / fps
        t3 = max(0.0, (k - dissolve // 2) / fps)
        mix = (1 - a) * _shot_frame(2, t2, w, h) + a * _shot_frame(3, t3, w, h)
        frames[start + k] = mix.astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "26", "preset": "medium", "x264-params": "threads=1"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# --------------------------------------------------------------------------------------
# multi-view scene: a tiny painter's-algorithm renderer of boxes on a floor


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenGL convention: camera looks down -z, y up)."""
    f = target - eye
    f = f / np.linalg.norm(f)
    r = np.cross(f, up)
    r = r / np.linalg.norm(r)
    u = np.cross(r, f)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, eye
    return m


def _box(center: tuple[float, float, float], size: tuple[float, float, float]) -> list:
    c, s = np.asarray(center), np.asarray(size) / 2
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * s + c
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    shade = [0.6, 0.75, 0.5, 1.0, 0.7, 0.85]  # fixed per-face shading (z up: face 3 is the top)
    return [(corners[list(f)], sh) for f, sh in zip(faces, shade)]


def render_scene_view(c2w: np.ndarray, w: int, h: int, fov_deg: float) -> Image.Image:
    from PIL import ImageDraw

    img = Image.new("RGB", (w, h), (200, 215, 235))
    draw = ImageDraw.Draw(img)
    w2c = np.linalg.inv(c2w)
    focal = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
    polys: list[tuple[float, np.ndarray, tuple[int, int, int]]] = []
    # floor tiles (checker)
    for i in range(-4, 4):
        for j in range(-4, 4):
            quad = np.array([[i, j, 0], [i + 1, j, 0], [i + 1, j + 1, 0], [i, j + 1, 0]]) * 0.5
            col = (150, 150, 150) if (i + j) % 2 else (90, 90, 90)
            polys.append((0.0, quad, col))
    objects = [
        ((0.0, 0.0, 0.4), (0.8, 0.8, 0.8), (220, 50, 40)),
        ((0.9, 0.3, 0.25), (0.5, 0.5, 0.5), (40, 90, 220)),
        ((-0.7, 0.8, 0.6), (0.4, 0.4, 1.2), (240, 200, 30)),
    ]
    for center, size, colour in objects:
        for quad, sh in _box(center, size):
            polys.append((sh, quad, tuple(int(c * sh) for c in colour)))  # type: ignore[misc]
    drawn = []
    for _sh, quad, col in polys:
        cam = (w2c[:3, :3] @ quad.T + w2c[:3, 3:4]).T  # camera coords, looking down -z
        if np.any(cam[:, 2] > -0.05):
            continue
        x = w / 2 + focal * cam[:, 0] / -cam[:, 2]
        y = h / 2 - focal * cam[:, 1] / -cam[:, 2]
        depth = float(np.mean(-cam[:, 2]))
        drawn.append((depth, [(float(a), float(b)) for a, b in zip(x, y)], col))
    for _depth, pts, col in sorted(drawn, key=lambda d: -d[0]):
        draw.polygon(pts, fill=col)
    return img


def make_scene(folder: Path, *, views: int = 16, w: int = 320, h: int = 240) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fov = 50.0
    frames = []
    for k in range(views):
        az = 2 * math.pi * k / views
        el = math.radians(25 + 10 * math.sin(3 * az))
        eye = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
        c2w = _look_at(eye * 4.0, np.array([0.0, 0.0, 0.3]), np.array([0.0, 0.0, 1.0]))
        name = f"view_{k + 1}.jpg"
        render_scene_view(c2w, w, h, fov).save(folder / name, quality=88)
        frames.append({"file_path": name, "transform_matrix": c2w.round(6).tolist()})
    meta = {"camera_angle_x": math.radians(fov), "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta, indent=1) + "\n")


# --------------------------------------------------------------------------------------
# mesh: a vertex-coloured torus knot


def make_mesh(path: Path, *, segments: int = 240, sides: int = 12) -> None:
    p, q, tube = 2, 3, 0.18
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    r = 0.6 + 0.3 * np.cos(q * t)
    centre = np.stack([r * np.cos(p * t), r * np.sin(p * t), 0.3 * np.sin(q * t)], 1)
    tangent = np.roll(centre, -1, 0) - np.roll(centre, 1, 0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.cross(tangent, [0.0, 0.0, 1.0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    binormal = np.cross(tangent, normal)
    a = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring = np.cos(a)[None, :, None] * normal[:, None] + np.sin(a)[None, :, None] * binormal[:, None]
    verts = (centre[:, None, :] + tube * ring).reshape(-1, 3).astype(np.float32)
    hue = np.repeat(t / (2 * np.pi), sides)
    colours = np.stack(
        [127 + 127 * np.cos(2 * np.pi * (hue + s)) for s in (0.0, 1 / 3, 2 / 3)], 1
    ).astype(np.uint8)
    faces = []
    for i in range(segments):
        for j in range(sides):
            a0 = i * sides + j
            a1 = i * sides + (j + 1) % sides
            b0 = ((i + 1) % segments) * sides + j
            b1 = ((i + 1) % segments) * sides + (j + 1) % sides
            faces += [(a0, b0, b1), (a0, b1, a1)]
    f = np.asarray(faces, np.int32)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment framepipe sample: torus knot\n"
        f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
    vrec = np.empty(len(verts), vdt)
    vrec["p"], vrec["c"] = verts, colours
    fdt = np.dtype([("n", "u1"), ("i", "<i4", 3)])
    frec = np.empty(len(f), fdt)
    frec["n"], frec["i"] = 3, f
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vrec.tobytes())
        fh.write(frec.tobytes())


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    make_video(out / "shots.mp4")
    make_scene(out / "scene_cubes")
    make_mesh(out / "torus_knot.ply")
    print(f"samples written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
