"""Shot detection on content framepipe did not design: F1 per class, speed, real footage.

The videos (:mod:`shot_corpus`, cached in ``.bench_cache/shots/``) are random edits of many
content families (ffmpeg's lavfi sources, scrolling stripes and rings, stretches of real
footage that packages ship) joined by random cuts, tone-matched cuts (``alike``),
dissolves and fades through black, with flashes and fast motion as traps. Seeds 0-4 are the
ones the built-in detector's settings may be looked at on; 5-9 are held out (reported on
their own). Detectors, each in this process on the same files:

- ``builtin``: framepipe's detector (``detect_shots``, default settings, opening the file
  and reading its metadata included);
- ``transnetv2``: framepipe's TransNetV2 detector (``detector=transnetv2``; CPU here);
- ``content`` / ``adaptive``: PySceneDetect's ``ContentDetector()`` / ``AdaptiveDetector()``
  at their defaults (``scenedetect.detect``, OpenCV backend).

A detected boundary matches a cut within 2 frames, a dissolve or fade when it falls inside
it (2 frames of slack); one detection per transition. Classes: ``cut``, ``alike`` (a cut
to a picture whose colour histograms match the frame before), ``dissolve``, ``fade``;
``flash`` and ``fast`` are the transitions next to a shot with a flash / with fast motion,
and the false boundaries inside those flashes / shots. Every other false boundary counts
against the class of the nearest true transition. ``overall`` counts each transition and
each false boundary once.

``--speed N``: whole processes, ``framepipe shots X`` against ``scenedetect -i X
detect-content``, alternating, N rounds over the files (the corpus, or with ``--speed-on
real`` the real clips); the ratios of the summed wall and CPU times.
``--real``: on the real clips (no labels) each detector against TransNetV2's boundaries.
``--checks``: flat red cut to a Mandelbrot zoom, PySceneDetect's ``fades.mp4`` and
``goldeneye-vfr-drop3.mp4`` (when in ``.bench_cache/checks/`` or ``.bench_cache/real/``).

    pip install 'framepipe[bench,transnet]'
    python benchmarks/bench_shots.py [--seeds 0-9] [--speed 3] [--real] [--checks]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import shot_corpus as corpus

CLASSES = ("cut", "alike", "dissolve", "fade", "flash", "fast")
LABEL = {
    "builtin": "framepipe builtin",
    "transnetv2": "framepipe transnetv2 (CPU)",
    "content": "PySceneDetect ContentDetector",
    "adaptive": "PySceneDetect AdaptiveDetector",
}


BUILTIN_OPTS: dict[str, Any] = {}
"""``--builtin-opt KEY=VALUE``: settings of the built-in detector (``DetectorParams``)."""


def run(name: str, path: Path) -> list[int]:
    if name in ("builtin", "transnetv2"):
        from framepipe.shots import detect_shots
        from framepipe.sources.base import open_source

        opts = BUILTIN_OPTS if name == "builtin" else {}
        with open_source(path) as src:
            det = detect_shots(src, detector=name, **opts)
            return [t.frame for t in det.transitions if det.start < t.frame < det.end]
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    detector = ContentDetector() if name == "content" else AdaptiveDetector()
    return [int(s.frame_num) for s, _ in detect(str(path), detector)[1:]]


def score(truth: dict[str, Any], found: list[int], slack: int = 2) -> dict[str, list[int]]:
    """Per class: [true positives, transitions, false boundaries]; ``overall`` too."""
    arr = np.asarray(sorted(found), dtype=np.int64)
    used = np.zeros(len(arr), bool)
    out = {c: [0, 0, 0] for c in (*CLASSES, "overall")}
    centres = []
    for t in truth["transitions"]:
        if t["kind"] in ("cut", "alike"):
            lo, hi, centre = t["frame"] - slack, t["frame"] + slack, t["frame"]
        else:
            lo, hi = t["start"] - slack, t["end"] + 1 + slack
            centre = (t["start"] + t["end"]) // 2
        centres.append((centre, t["classes"][0]))
        cands = [i for i in np.flatnonzero((arr >= lo) & (arr <= hi)) if not used[i]]
        hit = bool(cands)
        if hit:
            used[min(cands, key=lambda i: abs(int(arr[i]) - centre))] = True
        for c in (*t["classes"], "overall"):
            out[c][0] += hit
            out[c][1] += 1
    for i in np.flatnonzero(~used):
        f = int(arr[i])
        cls = next(
            (
                tr["kind"]
                for tr in truth["traps"]
                if tr["start"] - slack <= f <= tr["end"] + 1 + slack
            ),
            None,
        )
        if cls is None and centres:
            cls = min(centres, key=lambda c: abs(c[0] - f))[1]
        out[cls or "cut"][2] += 1
        out["overall"][2] += 1
    return out


def f1(c: list[int]) -> tuple[float, float, float]:
    tp, n, fp = c
    p = tp / max(1, tp + fp)
    r = tp / max(1, n)
    return p, r, 2 * p * r / max(1e-9, p + r)


def accuracy(data: list[tuple[Path, dict[str, Any]]], names: list[str], tune: set[int]) -> None:
    counts: dict[str, dict[str, dict[str, list[int]]]] = {}
    secs = dict.fromkeys(names, 0.0)
    frames = sum(t["frames"] for _, t in data)
    for path, truth in data:
        seed = int(path.stem.split("_")[1])
        for name in names:
            t0 = time.perf_counter()
            found = run(name, path)
            secs[name] += time.perf_counter() - t0
            for part in ("all", "tune" if seed in tune else "held-out"):
                acc = counts.setdefault(name, {}).setdefault(part, {})
                for c, v in score(truth, found).items():
                    acc[c] = [a + b for a, b in zip(acc.get(c, [0, 0, 0]), v)]
    first = counts[names[0]]["all"]
    n_by = ", ".join(f"{first[c][1]} {c}" for c in CLASSES)
    print(f"\n{len(data)} videos, {frames} frames; transitions per class: {n_by}\n")
    for part in ("all", "tune", "held-out"):
        if part not in counts[names[0]]:
            continue
        print(f"\n**{part}** (F1 per class; overall P / R / F1; false boundaries; frames/s)\n")
        print("| detector | " + " | ".join(CLASSES) + " | overall P | R | F1 | false | frames/s |")
        print("|---|" + "---|" * (len(CLASSES) + 5))
        for name in names:
            acc = counts[name][part]
            cells = [f"{f1(acc[c])[2]:.3f}" for c in CLASSES]
            p, r, f = f1(acc["overall"])
            print(
                f"| {LABEL[name]} | {' | '.join(cells)} | {p:.3f} | {r:.3f} | {f:.3f} | "
                f"{acc['overall'][2]} | {frames / max(1e-9, secs[name]):.0f} |"
            )


FLOOR = """import sys, av, numpy
c = av.open(sys.argv[1])
s = c.streams.video[0]
s.thread_type = "AUTO"
s.codec_context.skip_frame = sys.argv[2]
for packet in c.demux(s):
    s.codec_context.decode(packet)
"""
"""What any detector that reads a video's frames exactly pays before it does anything:
start Python, import numpy and PyAV, decode the frames (no scaling, no features), skipping
``sys.argv[2]``: ``NONREF`` (the frames nothing refers to: what framepipe's signal skips,
exact on any encoder) or ``BIDIR`` (every B-frame: what it skipped before, exact only where
no frame refers to a B-frame)."""


def speed(files: list[Path], rounds: int) -> None:
    """Whole processes: ``framepipe shots`` against ``scenedetect detect-content``; wall time
    and CPU time (user + system of the processes, all their threads: on a shared machine the
    steadier of the two). A third process, :data:`FLOOR`, is the cost that no change to
    framepipe's own work can go below without decoding less or decoding inexactly."""
    import compileall
    import resource

    import framepipe

    # What any installation (pip byte-compiles) or a first run leaves: with
    # PYTHONDONTWRITEBYTECODE set, an editable checkout would compile framepipe's modules
    # from source in every process (about 0.1 s each), and PySceneDetect's never.
    compileall.compile_dir(Path(framepipe.__file__).parent, quiet=1)

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    cmds = {
        "framepipe shots": lambda p: [sys.executable, "-m", "framepipe", "shots", str(p)],
        "scenedetect detect-content": lambda p: ["scenedetect", "-i", str(p), "detect-content"],
        "floor: decode, frames nothing refers to skipped": lambda p: [
            sys.executable,
            "-c",
            FLOOR,
            str(p),
            "NONREF",
        ],
        "floor: decode I/P only": lambda p: [sys.executable, "-c", FLOOR, str(p), "BIDIR"],
    }
    totals: dict[str, list[float]] = {k: [] for k in cmds}
    cpus: dict[str, list[float]] = {k: [] for k in cmds}
    loads = []
    for r in range(rounds):
        order = list(cmds) if r % 2 == 0 else list(cmds)[::-1]
        for name in order:
            t0, c0 = time.perf_counter(), cpu()
            for p in files:
                subprocess.run(cmds[name](p), check=True, capture_output=True)
            totals[name].append(time.perf_counter() - t0)
            cpus[name].append(cpu() - c0)
        loads.append(os.getloadavg()[0])
    print(
        f"\nwhole processes on {len(files)} files, {rounds} rounds (seconds per round, "
        f"wall / CPU; load average {', '.join(f'{x:.1f}' for x in loads)}):\n"
    )
    for name in cmds:
        pairs = ", ".join(f"{t:.1f} / {c:.1f}" for t, c in zip(totals[name], cpus[name]))
        print(f"- {name}: {pairs}")
    ours, theirs, *floors = cmds
    for what, d in (("wall", totals), ("CPU", cpus)):
        for name in (ours, *floors):
            ratios = [b / a for a, b in zip(d[name], d[theirs])]
            print(
                f"- {what} ratio, scenedetect / {name}, per round: "
                f"{', '.join(f'{x:.2f}x' for x in ratios)}; median {statistics.median(ratios):.2f}x"
            )


def real(names: list[str]) -> None:
    """Each detector against TransNetV2's boundaries on real clips (cuts within 2 frames)."""
    clips = corpus.real_clips()
    print("\n| clip | frames | TransNetV2 boundaries | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for clip in clips:
        ref = [a for a, _ in corpus.reference_shots(clip)[1:]]
        cells = []
        for name in names:
            found = run(name, clip)
            used, tp = set(), 0
            for r_ in ref:
                m = [f for f in found if abs(f - r_) <= 2 and f not in used]
                if m:
                    used.add(m[0])
                    tp += 1
            cells.append(f"{tp}/{len(ref)} found, {len(found) - len(used)} other")
        import av

        with av.open(str(clip)) as c:
            n = sum(1 for _ in c.decode(video=0))
        print(f"| {clip.name} | {n} | {len(ref)} | " + " | ".join(cells) + " |")


def checks(names: list[str]) -> None:
    folder = corpus.CACHE / "checks"
    folder.mkdir(parents=True, exist_ok=True)
    red = folder / "red_to_mandelbrot.mp4"
    if not red.exists():
        graph = (
            "color=c=red:s=640x360:r=25:d=6[a];mandelbrot=s=640x360:r=25,trim=duration=6,"
            "setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1"
        )
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", graph]
        subprocess.run([*cmd, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(red)], check=True)
    files = [red]
    for name in ("fades.mp4", "goldeneye-vfr-drop3.mp4", "issue-134-rotate.mp4"):
        for where in (folder, corpus.REAL):
            if (where / name).exists():
                files.append(where / name)
                break
    from framepipe.shots import detect_shots
    from framepipe.sources.base import open_source

    print("\n| file | detector | transitions (frame kind [start, end)) | times (s) |")
    print("|---|---|---|---|")
    for path in files:
        for name in names:
            if name in ("builtin", "transnetv2"):
                with open_source(path) as src:
                    det = detect_shots(src, detector=name)
                    ts = src.info().timestamps_s or ()
                items = [
                    f"{t.frame} {t.kind} [{t.start_frame}, {t.end_frame})" for t in det.transitions
                ]
                times = [f"{ts[t.frame]:.3f}" for t in det.transitions if t.frame < len(ts)]
            else:
                items = [str(f) for f in run(name, path)]
                times = []
            print(f"| {path.name} | {name} | {'; '.join(items)} | {', '.join(times)} |")


def _range(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--tune", default="0-4", help="Seeds settings may be looked at on.")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--detectors", default="builtin,transnetv2,content,adaptive")
    ap.add_argument("--speed", type=int, default=0, help="Rounds of the whole-process timing.")
    ap.add_argument(
        "--speed-on", choices=["corpus", "real"], default="corpus", help="Files --speed times."
    )
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--checks", action="store_true")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument(
        "--preset", default="veryfast", help="libx264 preset the corpus is encoded with."
    )
    ap.add_argument(
        "--builtin-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A setting of the built-in detector (e.g. skip=bidir).",
    )
    args = ap.parse_args()
    for opt in args.builtin_opt:
        key, _, value = opt.partition("=")
        BUILTIN_OPTS[key] = value
    w, h = (int(v) for v in args.size.split("x"))
    names = args.detectors.split(",")
    data = corpus.ensure(_range(args.seeds), args.seconds, w, h, args.preset)
    if not args.no_accuracy:
        accuracy(data, names, set(_range(args.tune)))
    if args.checks:
        checks(names)
    if args.real:
        real([n for n in names if n != "transnetv2"])
    if args.speed:
        files = [p for p, _ in data] if args.speed_on == "corpus" else corpus.real_clips()
        speed(files, args.speed)


if __name__ == "__main__":
    main()
