"""Plug-ins the engine and caption tests load inside worker processes (imported by name).

``misbehaving`` is a sampler that picks frames like ``uniform`` but, for inputs whose file
name says so, hangs (``hang``), crashes the process with a segfault (``segv``) or exits it
(``exit``), on every clip or on clip ``bad_clip`` only: the failures the local engine must
survive. ``slow`` sleeps a little first. ``StallSource`` hangs or crashes while opening.
Also small test videos (:func:`make_video`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from framepipe.errors import StopRunError
from framepipe.samplers.uniform import uniform
from framepipe.sources.base import Source, register_source
from framepipe.types import ClipSpec, FrameBatch, Selection, SourceInfo


def kwonly(
    info: SourceInfo, clip: ClipSpec, *, n: int, source: Source | None = None, step: int = 1
) -> Selection:
    """A plug-in with a keyword-only option and no ``overflow``: every ``step``-th frame."""
    idx = tuple(range(clip.start_frame, clip.end_frame, step))[:n]
    return Selection(idx, "kwonly", {"n": n, "step": step})


def misbehaving(info: SourceInfo, clip: ClipSpec, *, n: int, **params: Any) -> Selection:
    name = os.path.basename(info.id)
    bad_clip = params.pop("bad_clip", None)  # misbehave on this clip only (default: all)
    if bad_clip is not None and clip.index != bad_clip:
        name = ""
    if "hang" in name:
        time.sleep(3600)
    if "segv" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "exit" in name:
        os._exit(3)
    if "slow" in name:
        time.sleep(float(params.pop("delay_s", 0.3)))
    params.pop("delay_s", None)
    return uniform(info, clip, n=n, **params)


# -- a source kind whose opening hangs or crashes (files ``*.stall``) ---------------------------
@register_source
class StallSource(Source):
    """Claims ``*.stall`` files; ``info()`` hangs, or crashes when the name says ``segv``, or
    raises the error that stops a run (as a store's refused credentials do) when it says
    ``stop``."""

    kind: ClassVar[str] = "stall"
    extensions: ClassVar[frozenset[str]] = frozenset({".stall"})

    def info(self) -> SourceInfo:
        if "segv" in self.path.name:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "stop" in self.path.name:
            raise StopRunError(f"{self.path.name}: every input would fail the same way")
        time.sleep(3600)
        raise AssertionError("unreachable")

    def read(self, indices: Sequence[int]) -> FrameBatch:
        raise AssertionError("unreachable")


# -- media ----------------------------------------------------------------------------------------
def frame_color(i: int, seed: int = 0) -> tuple[int, int, int]:
    """A distinct flat colour per frame index (and per video seed)."""
    return ((37 * i + 11 * seed) % 200 + 28, (91 * i + 53 * seed) % 200 + 28, (13 * i) % 200 + 28)


def make_videos(
    folder: Path,
    count: int,
    num_frames: int,
    *,
    seed: int,
    size: tuple[int, int] = (64, 48),
    digits: int = 1,
) -> Path:
    """``folder`` with ``count`` videos ``v0.mp4``... (:func:`make_video`, seeds ``seed``,
    ``seed + 1``...; names zero-padded to ``digits``)."""
    for k in range(count):
        make_video(folder / f"v{k:0{digits}d}.mp4", num_frames, seed=seed + k, size=size)
    return folder


def make_video(
    path: Path,
    num_frames: int = 30,
    *,
    size: tuple[int, int] = (64, 48),
    fps: int = 30,
    seed: int = 0,
) -> Path:
    """A small H.264 MP4 whose frame i is filled with :func:`frame_color` (i, seed)."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18", "x264-params": "bframes=0:keyint=10"}
        for i in range(num_frames):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = frame_color(i, seed)
            img[: h // 4, : w // 4] = 255  # a marker, so frames are not all flat
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def video_folder(folder: Path, frame_counts: Sequence[int], *, seed: int = 1) -> Path:
    """``folder`` holding ``a.mp4``, ``b.mp4`` ... (one :func:`make_video` per frame count,
    seeds from ``seed``) and ``broken.mp4``, which is not a video."""
    for k, count in enumerate(frame_counts):
        make_video(folder / f"{chr(ord('a') + k)}.mp4", count, seed=seed + k)
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def _slept(seconds: float) -> None:
    time.sleep(seconds)


class SlowToSend:
    """Takes ``seconds`` to unpickle in a decoder process (as a processor whose module
    imports torch does): a window in which the process is still starting."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self) -> tuple[Any, tuple[float]]:
        return (_slept, (self.seconds,))
