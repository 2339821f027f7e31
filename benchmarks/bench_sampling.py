"""Uniform sampling of n frames from a long 720p H.264 video: framepipe against its peers.

Makes (once, cached under ``.bench_cache/sampling/``) a 10-minute and a 1-minute 1280x720
30 fps H.264 video with x264's GOP defaults (keyframe every 250 frames, 3 B-frames; encoded
with ``-preset veryfast`` so the 10-minute file is made in minutes; bframes=3 and keyint=250
are set explicitly), then, for n = 8, 16, 32 frames at the centres of n equal segments,
measures every reader in a fresh subprocess: wall time from opening the file to having the n
RGB frames in memory (imports excluded), and the process's peak RSS. Prints a markdown table
with ratios to decord's ``VideoReader.get_batch`` (the machine is shared and noisy; ratios
from the same run are what to compare).

    python benchmarks/bench_sampling.py                  # everything (about 15 min)
    python benchmarks/bench_sampling.py --quick          # no whole-video decoders
    python benchmarks/bench_sampling.py --readers framepipe,decord --n 8

Needs the ``bench`` extra (opencv-python-headless) and the ffmpeg command-line tool.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench_cache" / "sampling"

X264 = ["-c:v", "libx264", "-preset", "veryfast", "-x264-params", "keyint=250:bframes=3"]


def make_video(path: Path, seconds: int) -> Path:
    """1280x720 30 fps testsrc2 pattern (moving, with a counter), x264 keyint 250, 3 B-frames."""
    if path.exists():
        return path
    if shutil.which("ffmpeg") is None:
        sys.exit("the ffmpeg command-line tool is needed to make the benchmark videos")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        str(seconds),
        *X264,
        "-pix_fmt",
        "yuv420p",
        str(tmp),
    ]
    print(f"making {path.name} ({seconds} s of 720p) ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    tmp.rename(path)
    return path


def uniform_indices(total: int, n: int) -> list[int]:
    """Centres of n equal segments (framepipe's default uniform mode)."""
    return [min(total - 1, int((k + 0.5) * total / n)) for k in range(n)]


# -- readers: each opens the file and returns the n frames as an N x H x W x 3 uint8 array ----
def r_framepipe(path: str, idx: list[int]) -> np.ndarray:
    from framepipe.sources.video.source import VideoSource

    with VideoSource(path) as src:
        return src.read(idx).frames


def r_framepipe_pyav(path: str, idx: list[int]) -> np.ndarray:
    from framepipe.sources.video.source import VideoSource

    with VideoSource(path, backend="pyav") as src:
        return src.read(idx).frames


def r_framepipe_decord(path: str, idx: list[int]) -> np.ndarray:
    from framepipe.sources.video.source import VideoSource

    with VideoSource(path, backend="decord") as src:
        return src.read(idx).frames


def r_decord(path: str, idx: list[int]) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    return np.asarray(vr.get_batch(idx).asnumpy())


def _hf(backend: str) -> Callable[[str, list[int]], np.ndarray]:
    def read(path: str, idx: list[int]) -> np.ndarray:
        from transformers.video_utils import load_video

        def pick(metadata: Any, **kw: Any) -> np.ndarray:
            return np.asarray(idx)

        video, _meta = load_video(path, backend=backend, sample_indices_fn=pick)
        return np.asarray(video)

    return read


def r_opencv_seek(path: str, idx: list[int]) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(path)
    out = []
    for i in idx:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = cap.read()
        if not ok:
            raise RuntimeError(f"opencv could not read frame {i}")
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(out)


def r_pyav_seek(path: str, idx: list[int]) -> np.ndarray:
    """Plain PyAV: seek to each frame's time, decode until that pts (frame threads)."""
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        tb = s.time_base
        fps = s.average_rate
        start = s.start_time or 0
        out = []
        for i in idx:
            target = start + round(i / fps / tb)
            c.seek(target, stream=s)
            for f in c.decode(s):
                if f.pts is not None and f.pts >= target:
                    out.append(f.to_ndarray(format="rgb24"))
                    break
        return np.stack(out)


def r_decode_all(path: str, idx: list[int]) -> np.ndarray:
    """Decode every frame (frame threads), keep the wanted ones."""
    import av

    want = set(idx)
    keep: dict[int, np.ndarray] = {}
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for k, f in enumerate(c.decode(s)):
            if k in want:
                keep[k] = f.to_ndarray(format="rgb24")
    return np.stack([keep[i] for i in idx])


READERS: dict[str, tuple[Callable[[str, list[int]], np.ndarray], str]] = {
    "framepipe": (r_framepipe, "framepipe VideoSource (backend=auto)"),
    "framepipe-pyav": (r_framepipe_pyav, "framepipe, backend=pyav"),
    "framepipe-decord": (r_framepipe_decord, "framepipe, backend=decord"),
    "decord": (r_decord, "decord VideoReader.get_batch"),
    "hf-pyav": (_hf("pyav"), "transformers load_video, pyav"),
    "hf-decord": (_hf("decord"), "transformers load_video, decord"),
    "opencv-seek": (r_opencv_seek, "OpenCV CAP_PROP_POS_FRAMES seek per frame"),
    "pyav-seek": (r_pyav_seek, "PyAV seek + decode to pts per frame"),
    "decode-all": (r_decode_all, "PyAV decode every frame"),
}
SLOW = {"hf-pyav", "decode-all"}
"""Readers whose cost hardly depends on n (they decode everything up to the last index)."""
DEFAULT = ["framepipe", "decord", "hf-pyav", "hf-decord", "opencv-seek", "pyav-seek", "decode-all"]


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: on Linux that keeps the
    forking parent's peak across exec, which would charge the parent's memory to the child."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, path: str, idx: list[int]) -> None:
    """Runs in a fresh process: import, then time one read; prints one JSON line."""
    import av  # noqa: F401 - PyAV before decord (see framepipe/sources/video/decord_reader.py)

    fn = READERS[name][0]
    if name.startswith("hf-"):
        import transformers.video_utils  # noqa: F401
    if "decord" in name:
        import decord  # noqa: F401
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    frames = fn(path, idx)
    wall = time.perf_counter() - t0
    assert frames.shape[0] == len(idx) and frames.dtype == np.uint8, frames.shape
    print(json.dumps({"wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base}))


def run_one(name: str, path: Path, idx: list[int]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", name, str(path), ",".join(map(str, idx))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"{name} failed: {tail}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def check_exact(path: Path, idx: list[int]) -> str:
    """framepipe's frames against a full sequential decode (the reference), pixel for pixel."""
    ref = r_decode_all(str(path), idx)
    got = r_framepipe(str(path), idx)
    return "exact" if np.array_equal(ref, got) else "MISMATCH"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--worker", nargs=3, metavar=("READER", "PATH", "INDICES"), help=argparse.SUPPRESS
    )
    ap.add_argument("--n", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--readers", default=",".join(DEFAULT), help=f"from {', '.join(READERS)}")
    ap.add_argument(
        "--slow-all-n",
        action="store_true",
        help="measure hf-pyav and decode-all at every n (default: the first n only)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per cell (median)")
    ap.add_argument("--quick", action="store_true", help="skip hf-pyav and decode-all")
    ap.add_argument("--long-minutes", type=int, default=10)
    ap.add_argument("--skip-short", action="store_true", help="only the long video")
    ap.add_argument("--check", action="store_true", help="also check framepipe's pixels (first n)")
    ap.add_argument("--make-only", action="store_true")
    args = ap.parse_args()
    if args.worker:
        name, path, idx = args.worker
        worker(name, path, [int(i) for i in idx.split(",")])
        return

    videos = {
        f"{args.long_minutes} min": make_video(
            CACHE / f"h264_720p30_{args.long_minutes}min.mp4", 60 * args.long_minutes
        )
    }
    if not args.skip_short:
        videos["1 min"] = make_video(CACHE / "h264_720p30_1min.mp4", 60)
    if args.make_only:
        return
    readers = [r for r in args.readers.split(",") if r]
    if args.quick:
        readers = [r for r in readers if r not in SLOW]
    import decord

    print(f"load: {os.getloadavg()}, cpus: {os.cpu_count()}", file=sys.stderr)
    results: dict[tuple[str, int, str], dict[str, float]] = {}
    for label, path in videos.items():
        total = len(decord.VideoReader(str(path)))
        for n in args.n:
            idx = uniform_indices(total, n)
            if args.check and n == args.n[0]:
                print(f"{label} n={n}: framepipe vs full decode: {check_exact(path, idx)}")
            for name in readers:
                if name in SLOW and n != args.n[0] and not args.slow_all_n:
                    continue
                reps = 1 if name in SLOW else args.repeats
                runs = []
                for _ in range(reps):
                    try:
                        runs.append(run_one(name, path, idx))
                    except RuntimeError as exc:
                        print(f"  {exc}", file=sys.stderr)
                if not runs:
                    continue
                results[(label, n, name)] = {
                    "wall_s": statistics.median(r["wall_s"] for r in runs),
                    "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                    "base_rss_mb": statistics.median(r["base_rss_mb"] for r in runs),
                }
                r = results[(label, n, name)]
                print(
                    f"  {label} n={n} {name}: {r['wall_s']:.3f} s, peak {r['peak_rss_mb']:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"\nload after: {os.getloadavg()}\n")
    print(
        "| video | n | reader | wall s | x decord time | peak RSS MB | x decord RSS "
        "| RSS before read MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (label, n, name), r in results.items():
        ref = results.get((label, n, "decord"))
        tr = f"{r['wall_s'] / ref['wall_s']:.2f}" if ref else "-"
        mr = f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}" if ref else "-"
        print(
            f"| {label} | {n} | {name} | {r['wall_s']:.3f} | {tr} | {r['peak_rss_mb']:.0f} | {mr} "
            f"| {r['base_rss_mb']:.0f} |"
        )
    if len(videos) == 2:
        long_label, short_label = list(videos)
        print("\nframepipe peak RSS, long / short video:")
        for n in args.n:
            a = results.get((long_label, n, "framepipe"))
            b = results.get((short_label, n, "framepipe"))
            if a and b:
                print(
                    f"- n={n}: {a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} MB = "
                    f"{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x"
                )


if __name__ == "__main__":
    main()
