"""Shot detection: framepipe's detector against PySceneDetect, and shot coverage.

Generates (once; cached in ``.bench_cache/keyframe/``) a set of 720p H.264 videos (libx264,
B-frames) with known hard cuts, cuts between similar shots, dissolves, fades through black,
flash frames and fast-motion shots, then measures in one run, on the same files:

- framepipe's detector (``framepipe.shots.detect_shots``, default settings,
  including reading the video's metadata);
- PySceneDetect ``ContentDetector()`` and ``AdaptiveDetector()`` at their defaults
  (``scenedetect.detect``, OpenCV backend);

precision, recall and F1 of transitions (a detected boundary matches a cut within 2 frames,
a dissolve or fade when it falls inside it, 2 frames of slack; one detection per
transition), and frames per second. Then the shot coverage: with n = the number of shots,
the share of shots of 1 s or more that get a frame (a frame inside the shot's clean part,
outside any transition), for ``keyframe`` and ``uniform``.

    pip install 'framepipe[bench]'
    python benchmarks/bench_keyframe.py [--minutes 10] [--videos 6]

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

W, H, FPS = 1280, 720, 25
CACHE = Path(__file__).resolve().parent.parent / ".bench_cache" / "keyframe"


# -- synthetic edited video ---------------------------------------------------------------


def _texture(rng: np.random.Generator, palette_seed: int | None = None) -> np.ndarray:
    """A 2W x 2H textured picture: smooth colour blobs, finer detail and a few shapes."""
    from PIL import Image, ImageDraw

    prng = np.random.default_rng(palette_seed) if palette_seed is not None else rng
    base = prng.integers(0, 256, (9, 16, 3), dtype=np.uint8)
    big = Image.fromarray(base).resize((2 * W, 2 * H), Image.Resampling.BICUBIC)
    detail = rng.integers(0, 256, (90, 160), dtype=np.uint8)
    fine = np.asarray(Image.fromarray(detail).resize((2 * W, 2 * H), Image.Resampling.BILINEAR))
    img = np.asarray(big).astype(np.int16) + ((fine.astype(np.int16) - 128) // 3)[..., None]
    pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    for _ in range(25):
        x, y = int(rng.integers(0, 2 * W)), int(rng.integers(0, 2 * H))
        r = int(rng.integers(30, 160))
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=col)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=col)
    return np.asarray(pic)


def _tri(x: float, span: int) -> int:
    """Triangle wave: a camera path that bounces inside [0, span]."""
    p = x % (2 * span)
    return int(p if p <= span else 2 * span - p)


@dataclass
class Shot:
    tex: np.ndarray
    frames: int
    x0: float
    y0: float
    vx: float
    vy: float
    fast: bool

    def frame(self, k: int) -> np.ndarray:
        x = _tri(self.x0 + self.vx * k, W)
        y = _tri(self.y0 + self.vy * k, H)
        return self.tex[y : y + H, x : x + W]


def make_video(path: Path, seed: int, seconds: float) -> dict[str, Any]:
    """Write one video; return its ground truth."""
    rng = np.random.default_rng(seed)
    total = int(seconds * FPS)
    shots: list[Shot] = []
    plan: list[tuple[str, int]] = []  # transition kind and its length in frames, after shot
    n = 0
    prev_tex: np.ndarray | None = None
    while n < total:
        fast = rng.random() < 0.2
        same = prev_tex is not None and rng.random() < 0.15  # cut to the same scene elsewhere
        tex = prev_tex if same and prev_tex is not None else _texture(rng)
        length = int(rng.integers(int(1.5 * FPS), int(7 * FPS)))
        speed = rng.uniform(25, 60) if fast else rng.uniform(0, 6)
        ang = rng.uniform(0, 2 * np.pi)
        shot = Shot(
            tex,
            length,
            float(rng.uniform(0, W)),
            float(rng.uniform(0, H)),
            speed * np.cos(ang),
            speed * np.sin(ang),
            fast,
        )
        shots.append(shot)
        prev_tex = tex
        r = rng.random()
        if r < 0.7:
            plan.append(("cut", 0))
        elif r < 0.85:
            plan.append(("dissolve", int(rng.integers(int(0.6 * FPS), int(1.6 * FPS)))))
        else:
            plan.append(("fade", int(rng.integers(int(0.8 * FPS), int(2.0 * FPS)))))
        n += length
    plan[-1] = ("end", 0)
    cmd = [
        "ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
        "-crf", "23", "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    truth: list[dict[str, Any]] = []
    flashes: list[int] = []
    shot_spans: list[list[int]] = []
    frame_no = 0

    def emit(img: np.ndarray) -> None:
        nonlocal frame_no
        assert proc.stdin is not None
        proc.stdin.write(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
        frame_no += 1

    clean_start = 0
    consumed = 0  # frames of the next shot already shown by a transition
    for i, shot in enumerate(shots):
        kind, tlen = plan[i]
        nflash = int(rng.integers(0, 2)) if shot.frames > 2 * FPS else 0
        flash_at = {int(rng.integers(FPS // 2, shot.frames - FPS // 2)) for _ in range(nflash)}
        body = shot.frames
        for k in range(consumed, body):
            img = shot.frame(k)
            if k in flash_at:
                flashes.append(frame_no)
                img = np.minimum(255, img.astype(np.uint16) * 2 + 90).astype(np.uint8)
            emit(img)
        shot_spans.append([clean_start, frame_no])
        if kind == "cut":
            truth.append({"kind": "cut", "frame": frame_no})
            clean_start = frame_no
            consumed = 0
        elif kind == "dissolve":
            nxt = shots[i + 1]
            t0 = frame_no
            for j in range(tlen):
                a = (j + 1) / (tlen + 1)
                img = shot.frame(body + j) * (1 - a) + nxt.frame(j) * a
                emit(img)
            truth.append({"kind": "dissolve", "start": t0, "end": frame_no - 1})
            clean_start = frame_no
            consumed = tlen
        elif kind == "fade":
            nxt = shots[i + 1]
            t0 = frame_no
            out_len = tlen // 2
            black = int(rng.integers(0, FPS // 2))
            for j in range(out_len):
                emit(shot.frame(body + j) * (1 - (j + 1) / out_len))
            for _ in range(black):
                emit(np.zeros((H, W, 3), np.uint8))
            for j in range(tlen - out_len):
                emit(nxt.frame(j) * ((j + 1) / (tlen - out_len + 1)))
            truth.append({"kind": "fade", "start": t0, "end": frame_no - 1})
            clean_start = frame_no
            consumed = tlen - out_len
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed on {path}")
    return {
        "frames": frame_no,
        "fps": FPS,
        "transitions": truth,
        "flashes": flashes,
        "shots": shot_spans,
        "fast_shots": int(sum(s.fast for s in shots)),
    }


def ensure_videos(minutes: float, videos: int) -> list[tuple[Path, dict[str, Any]]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60 / videos
    out = []
    for v in range(videos):
        path = CACHE / f"edit_{v:02d}_{int(seconds)}s.mp4"
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            t0 = time.perf_counter()
            truth = make_video(path, 1000 + v, seconds)
            meta.write_text(json.dumps(truth))
            print(f"generated {path.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out.append((path, json.loads(meta.read_text())))
    return out


# -- scoring ------------------------------------------------------------------------------


def match(truth: list[dict[str, Any]], found: list[int], slack: int = 2) -> dict[str, int]:
    """Greedy one-to-one matching of detected boundaries to true transitions."""
    used = [False] * len(found)
    arr = np.asarray(found, dtype=np.int64)
    tp = {"cut": 0, "dissolve": 0, "fade": 0}
    tot = {"cut": 0, "dissolve": 0, "fade": 0}
    for t in truth:
        tot[t["kind"]] += 1
        if t["kind"] == "cut":
            lo, hi, centre = t["frame"] - slack, t["frame"] + slack, t["frame"]
        else:
            lo, hi = t["start"] - slack, t["end"] + 1 + slack
            centre = (t["start"] + t["end"]) // 2
        cands = [i for i in np.flatnonzero((arr >= lo) & (arr <= hi)) if not used[i]]
        if cands:
            best = min(cands, key=lambda i: abs(int(arr[i]) - centre))
            used[best] = True
            tp[t["kind"]] += 1
    return {
        "tp": sum(tp.values()),
        "fp": len(found) - sum(used),
        "fn": sum(tot.values()) - sum(tp.values()),
        **{f"tp_{k}": v for k, v in tp.items()},
        **{f"n_{k}": v for k, v in tot.items()},
    }


def prf(c: dict[str, int]) -> tuple[float, float, float]:
    p = c["tp"] / max(1, c["tp"] + c["fp"])
    r = c["tp"] / max(1, c["tp"] + c["fn"])
    f = 2 * p * r / max(1e-9, p + r)
    return p, r, f


# -- detectors ----------------------------------------------------------------------------


def run_framepipe(path: Path) -> list[int]:
    from framepipe.shots import detect_shots
    from framepipe.sources.base import open_source

    with open_source(path) as src:
        det = detect_shots(src)
        return [t.frame for t in det.transitions]


def run_scenedetect(path: Path, which: str) -> list[int]:
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    detector = ContentDetector() if which == "content" else AdaptiveDetector()
    scenes = detect(str(path), detector)
    return [int(s.frame_num) for s, _ in scenes[1:]]


def coverage(path: Path, truth: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    from framepipe.samplers.base import get_sampler
    from framepipe.sources.base import open_source
    from framepipe.types import ClipSpec

    spans = truth["shots"]
    n = len(spans)
    out: dict[str, tuple[int, int, int]] = {}
    with open_source(path) as src:
        info = src.info()
        clip = ClipSpec(info.id, 0, info.num_frames)
        for name in ("keyframe", "uniform"):
            _, fn = get_sampler(name)
            idx = fn(info, clip, n=n, source=src).indices
            eligible = [(a, b) for a, b in spans if (b - a) >= FPS]
            covered = sum(any(a <= i < b for i in idx) for a, b in eligible)
            in_trans = sum(
                any(
                    t["kind"] != "cut" and t["start"] <= i <= t["end"] for t in truth["transitions"]
                )
                for i in idx
            )
            out[name] = (covered, len(eligible), in_trans)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="Total video length.")
    ap.add_argument("--videos", type=int, default=6, help="Number of videos.")
    ap.add_argument(
        "--only", choices=["framepipe", "content", "adaptive"], action="append", default=None
    )
    args = ap.parse_args()
    data = ensure_videos(args.minutes, args.videos)
    names = args.only or ["framepipe", "content", "adaptive"]
    counts: dict[str, dict[str, int]] = {k: {} for k in names}
    secs = {k: 0.0 for k in names}
    frames = sum(t["frames"] for _, t in data)
    for path, truth in data:
        for name in names:
            t0 = time.perf_counter()
            found = run_framepipe(path) if name == "framepipe" else run_scenedetect(path, name)
            secs[name] += time.perf_counter() - t0
            c = match(truth["transitions"], found)
            for k, v in c.items():
                counts[name][k] = counts[name].get(k, 0) + v
            if os.environ.get("BENCH_VERBOSE"):
                print(path.name, name, c, file=sys.stderr)
    kinds = {k: counts[names[0]][f"n_{k}"] for k in ("cut", "dissolve", "fade")}
    flashes = sum(len(t["flashes"]) for _, t in data)
    fast = sum(t["fast_shots"] for _, t in data)
    print(
        f"\n{len(data)} videos, {frames} frames ({frames / FPS / 60:.1f} min) of {W}x{H} "
        f"H.264 at {FPS} fps: {kinds['cut']} cuts, {kinds['dissolve']} dissolves, "
        f"{kinds['fade']} fades, {flashes} flashes, {fast} fast-motion shots; "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| detector | precision | recall | F1 | cuts found | dissolves | fades | "
        "false | frames/s | speed vs best PySceneDetect |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    label = {
        "framepipe": "framepipe keyframe",
        "content": "PySceneDetect ContentDetector",
        "adaptive": "PySceneDetect AdaptiveDetector",
    }
    rest = [k for k in names if k != "framepipe"]
    best = max(rest, key=lambda k: prf(counts[k])[2]) if rest else None
    for name in names:
        c = counts[name]
        p, r, f = prf(c)
        fps = frames / max(1e-9, secs[name])
        ratio = f"{secs[best] / secs[name]:.2f}x" if best else "-"
        print(
            f"| {label[name]} | {p:.3f} | {r:.3f} | {f:.3f} | {c['tp_cut']}/{c['n_cut']} | "
            f"{c['tp_dissolve']}/{c['n_dissolve']} | {c['tp_fade']}/{c['n_fade']} | "
            f"{c['fp']} | {fps:.0f} | {ratio} |"
        )
    if "framepipe" in names:
        cov = {"keyframe": [0, 0, 0], "uniform": [0, 0, 0]}
        for path, truth in data:
            for k, v in coverage(path, truth).items():
                for j in range(3):
                    cov[k][j] += v[j]
        print(
            "\n| sampler (n = shots) | shots >= 1 s with a frame | coverage | "
            "frames inside a dissolve/fade |"
        )
        print("|---|---|---|---|")
        for k, (c_, e_, t_) in cov.items():
            print(f"| {k} | {c_}/{e_} | {c_ / max(1, e_):.3f} | {t_} |")


if __name__ == "__main__":
    main()
