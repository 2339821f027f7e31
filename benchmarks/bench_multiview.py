"""Multi-view scenes: time to choose n views and read them, against reading every view.

    python benchmarks/bench_multiview.py [--views 200] [--repeat 3]

The scene (made once, cached in ``.bench_cache/``): 200 JPEGs stored 1920x1080 with EXIF
orientation 6, so they show as 1080x1920 portrait frames, and a ``transforms.json`` whose
cameras bunch on one side of the object (as a hand-held capture does). A copy of the folder
without the poses file is the appearance case.

Measured in the same run (the machine is shared, so ratios matter more than seconds):

- ``info``: open the scene and read every header (no pixel decoded);
- ``nview`` with poses: choose n views, then read them (``max_side`` 1536 default, and full
  size); the number of images the process decoded is counted with a spy on PIL's
  ``ImageFile.load``, and must be n;
- ``nview`` without poses: 1/8-scale thumbnails of every view, then the n chosen views;
- the alternative: decode all 200 views at full size (what a reader that decodes
  everything to keep a few would pay).

Prints a markdown table; the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFile

from framepipe.clips import whole_clip
from framepipe.samplers.nview import coverage_of, nview
from framepipe.samplers.uniform import uniform
from framepipe.sources.multiview.source import MultiviewSource

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench_cache"


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    f = (target - eye) / np.linalg.norm(target - eye)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, eye
    return m


def make_scene(folder: Path, views: int) -> None:
    """``views`` JPEGs 1920x1080 stored, EXIF orientation 6 (shown 1080x1920), with poses."""
    marker = folder / ".complete"
    if marker.exists() and marker.read_text() == str(views):
        return
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    k = int(views * 0.75)  # most cameras on one side, the rest all round
    az = np.concatenate([rng.normal(30, 20, k), rng.uniform(0, 360, views - k)])
    el = np.concatenate([rng.normal(20, 8, k), rng.uniform(-5, 70, views - k)])
    order = rng.permutation(views)
    w, h = 1920, 1080
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = []
    for i in range(views):
        a, e = math.radians(az[order[i]]), math.radians(el[order[i]])
        eye = 4.0 * np.array([math.cos(a) * math.cos(e), math.sin(a) * math.cos(e), math.sin(e)])
        c2w = _look_at(eye, np.zeros(3))
        base = np.stack(
            [
                127 + 100 * np.sin(xx / 97.0 + a * 3),
                127 + 100 * np.cos(yy / 61.0 + e * 5),
                127 + 100 * np.sin((xx + yy) / 143.0 + a),
            ],
            axis=2,
        )
        noise = rng.normal(0, 12, (h, w, 1)).astype(np.float32)
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, w - 200)), int(rng.integers(0, h - 200))
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            draw.rectangle((x0, y0, x0 + int(rng.integers(50, 400)), y0 + 150), fill=colour)
        name = f"IMG_{i + 1}.jpg"
        img.save(folder / name, quality=90, exif=exif.tobytes())
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    meta = {"camera_angle_x": 0.9, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    marker.write_text(str(views))


class LoadSpy:
    """Counts PIL image decodes: calls of ``ImageFile.load`` with pixel data still to decode
    (a second ``load`` of a decoded image decodes nothing)."""

    def __init__(self) -> None:
        self.count = 0
        self._real = ImageFile.ImageFile.load

    def __enter__(self) -> LoadSpy:
        spy = self

        def load(img: ImageFile.ImageFile) -> Any:
            if img.tile:
                spy.count += 1
            return spy._real(img)

        ImageFile.ImageFile.load = load  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        ImageFile.ImageFile.load = self._real  # type: ignore[method-assign]


_RSS_CHILD = """
import sys
from framepipe.sources.multiview.source import MultiviewSource

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

src = MultiviewSource(sys.argv[1], max_side=int(sys.argv[2]))
src.info()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current resident size
base = status("VmRSS")
frame = src.read([0]).images()[0]
print(status("VmHWM") - base, frame.shape[1], frame.shape[0])
"""


def huge_read_memory(folder: Path) -> list[tuple[str, str, str]]:
    """Peak memory added by reading one 8000x6000 JPEG and one 8000x6000 PNG, in fresh
    processes (Linux: the peak resident size is reset after ``info``, read after ``read``)."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for fmt in ("jpg", "png"):
        sub = folder / fmt
        if not (sub / f"huge.{fmt}").exists():
            sub.mkdir(exist_ok=True)
            yy, xx = np.mgrid[0:6000, 0:8000].astype(np.float32)
            arr = np.stack([xx % 251, yy % 241, (xx + yy) % 239], axis=2).astype(np.uint8)
            Image.fromarray(arr).save(
                sub / f"huge.{fmt}", **({"quality": 90} if fmt == "jpg" else {})
            )
        for max_side in (2048, 0):
            out = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, str(sub), str(max_side)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            kib, w, h = (int(v) for v in out)
            label = f"read one 8000x6000 {fmt.upper()}, max_side={max_side}"
            rows.append((label, f"{w}x{h}", f"{kib / 1024:.0f} MiB"))
    return rows


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall-clock and best process CPU seconds over ``repeat`` runs, and the last result.

    CPU time is the steadier figure on a loaded machine (it does not count waiting)."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return min(walls), min(cpus), out


def _ms(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 10 else f"{s:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    scene = CACHE / f"multiview_{args.views}"
    t = time.perf_counter()
    make_scene(scene, args.views)
    made_s = time.perf_counter() - t
    nopose = CACHE / f"multiview_{args.views}_noposes"
    if not (nopose / ".complete").exists():
        shutil.rmtree(nopose, ignore_errors=True)
        nopose.mkdir(parents=True)
        for p in scene.glob("*.jpg"):
            shutil.copy(p, nopose / p.name)
        (nopose / ".complete").write_text("1")

    rows: list[tuple[str, ...]] = []

    def info_only() -> Any:
        return MultiviewSource(scene).info()

    w_info, c_info, info = best_of(info_only, args.repeat)
    with LoadSpy() as spy:
        info_only()
    rows.append(("open + info (all headers)", _ms(w_info), _ms(c_info), str(spy.count), ""))

    def decode_all() -> Any:
        src = MultiviewSource(scene)
        return [src.read([i]) for i in range(src.info().num_frames)]

    w_all, c_all, _ = best_of(decode_all, 1)
    label = f"alternative: decode all {info.num_frames} views (1080x1920)"
    rows.append((label, _ms(w_all), _ms(c_all), str(info.num_frames), "1"))

    for n in (8, 16):
        for max_side in (2048, 1024):

            def run(n: int = n, max_side: int = max_side) -> tuple[Any, float]:
                src = MultiviewSource(scene, max_side=max_side)
                inf = src.info()
                c0 = time.process_time()
                sel = nview(inf, whole_clip(inf), n=n, source=src)
                c_sel = time.process_time() - c0
                return src.read(list(sel.indices)), c_sel

            w, c, (batch, c_sel) = best_of(run, args.repeat)
            with LoadSpy() as spy:
                run()
            size = "x".join(map(str, batch.images()[0].shape[1::-1]))
            label = f"nview n={n} with poses: info + choose + read, {size}"
            if max_side != 2048:
                label += f" (max_side={max_side})"
            rows.append(
                (
                    label,
                    _ms(w),
                    f"{_ms(c)} (choose {_ms(c_sel)})",
                    str(spy.count),
                    f"{c_all / c:.0f}",
                )
            )

    for n in (8, 16):

        def run_np(n: int = n) -> Any:
            src = MultiviewSource(nopose)
            inf = src.info()
            sel = nview(inf, whole_clip(inf), n=n, source=src)
            src.read(list(sel.indices))
            return sel

        w, c, sel_np = best_of(run_np, args.repeat)
        with LoadSpy() as spy:
            run_np()
        label = f"nview n={n} no poses ({sel_np.extra['method']}): info + thumbnails + read"
        decoded = f"{spy.count} ({info.num_frames} at 1/8 scale + {n})"
        rows.append((label, _ms(w), _ms(c), decoded, f"{c_all / c:.1f}"))

    clip = whole_clip(info)
    cov_rows = []
    for n in (4, 8, 16):
        a = nview(info, clip, n=n)
        b = uniform(info, clip, n=n)
        ca = a.extra["coverage_radius_deg"]
        cb = (coverage_of(info, b.indices) or {}).get("coverage_radius_deg")
        cov_rows.append((n, ca, cb))

    print(
        f"scene: {info.num_frames} JPEGs stored 1920x1080, EXIF orientation 6 (shown "
        f"1080x1920); generated in {made_s:.1f} s (cached)\n"
    )
    print(
        f"| step | wall (best of {args.repeat}) | CPU (best of {args.repeat}) "
        "| images decoded | CPU: decoding all / this |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print("\n| step | frame returned | peak memory added |")
    print("|---|---|---|")
    for r in huge_read_memory(CACHE / "multiview_huge"):
        print("| " + " | ".join(r) + " |")
    print("\n| n | nview covering radius | uniform covering radius |")
    print("|---|---|---|")
    for n, ca, cb in cov_rows:
        print(f"| {n} | {ca:.1f} deg | {cb:.1f} deg |")
    with contextlib.suppress(OSError):
        load = os.getloadavg()[0]
        print(f"\nload average: {load:.1f} on {os.cpu_count()} CPUs", file=sys.stderr)


if __name__ == "__main__":
    main()
