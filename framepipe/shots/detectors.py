"""The shot detectors by name (``framepipe shots --detector``, ``detector=`` for the keyframe
sampler and the shots clip planner).

A :class:`ShotDetector` gets the open source, its info, the range and the settings, and
returns a :class:`~framepipe.shots.ShotDetection`; it reads its frames from the source
(never a file). ``check`` raises :class:`~framepipe.errors.MissingDependencyError` (one line,
naming the extra) when the detector cannot run here, before any frame is read. ``settings``
names the :class:`~framepipe.shots.DetectorParams` fields it reads: a setting given that the
chosen detector does not read is refused (:func:`checked_params`, the one check that
``framepipe shots``, the keyframe sampler, the shots clip planner and
:func:`~framepipe.shots.detect_shots` all make), never ignored.

Built in: ``builtin`` (:mod:`framepipe.shots.detector`, on the source's cheap signal) and
``transnetv2`` (:mod:`framepipe.shots.transnet`, ``pip install 'framepipe[transnet]'``).
Plug-ins register with :func:`register_detector` or through the entry-point group
``framepipe.shot_detectors``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from framepipe.errors import ConfigError
from framepipe.registry import Registry
from framepipe.shots.detector import ShotDetection, detect
from framepipe.shots.params import DetectorParams

if TYPE_CHECKING:
    from framepipe.sources.base import Source
    from framepipe.types import SmallFrames, SourceInfo

log = logging.getLogger(__name__)

DetectFn = Callable[["Source", "SourceInfo", int, int, DetectorParams], ShotDetection]
"""``detect(source, info, start, end, params)``: the shots of frames ``[start, end)``."""


def _always() -> None:
    """A detector that needs nothing beyond framepipe's own dependencies."""


@dataclass(frozen=True)
class ShotDetector:
    """One shot detector."""

    name: str
    detect: DetectFn
    """Finds the shots of a range of an open source."""
    check: Callable[[], None] = _always
    """Raises MissingDependencyError when the detector cannot run here (cheap; no model is
    loaded)."""
    settings: tuple[str, ...] = ()
    """The :class:`DetectorParams` fields it reads (``detector`` aside), in the order its
    help lists them. Any other setting given with it is refused; a detector that declares
    none takes none."""

    def __post_init__(self) -> None:
        known = {f.name for f in fields(DetectorParams)} - {"detector"}
        unknown = sorted(set(self.settings) - known)
        if unknown:
            raise ValueError(
                f"shot detector {self.name!r} declares settings DetectorParams does not have: "
                f"{', '.join(unknown)}"
            )


DETECTORS: Registry[ShotDetector] = Registry(
    "shot detector",
    {"builtin": __name__, "transnetv2": "framepipe.shots.transnet"},
    entry_point_group="framepipe.shot_detectors",
)
"""Shot detectors by name: the built-ins and installed plug-ins."""


def register_detector(detector: ShotDetector) -> ShotDetector:
    """Make ``detector`` available under its name."""
    DETECTORS.register(detector.name, detector)
    return detector


def checked_detector(params: Mapping[str, Any]) -> tuple[DetectorParams, ShotDetector]:
    """The shot detector's settings ``params`` checked, and the detector they choose: an
    unknown detector, a bad value or a setting the chosen detector does not read (given, even
    at its default) is a one-line ConfigError, a missing library a MissingDependencyError,
    before any work."""
    p = DetectorParams.from_params(dict(params))
    detector = DETECTORS.get(p.detector)
    unused = [k for k in params if k != "detector" and k not in detector.settings]
    if unused:
        names = ", ".join(sorted(unused))
        are = "is not a setting" if len(unused) == 1 else "are not settings"
        takes = ", ".join(detector.settings) or "none"
        raise ConfigError(f"{names} {are} of shot detector {p.detector!r} (its settings: {takes})")
    detector.check()
    return p, detector


def checked_params(params: Mapping[str, Any]) -> DetectorParams:
    """The shot detector's settings ``params`` checked (:func:`checked_detector`)."""
    return checked_detector(params)[0]


def settings_help() -> str:
    """Each registered detector and the settings it takes, for ``--help``: ``builtin:
    size, skip, ...; transnetv2: ...``."""
    return "; ".join(f"{n}: {', '.join(d.settings) or 'none'}" for n, d in DETECTORS.items())


def detect_builtin(
    source: Source, info: SourceInfo, start: int, end: int, p: DetectorParams
) -> ShotDetection:
    """The built-in detector on the source's cheap signal (B-frames skipped), decoding every
    frame only around candidate cuts."""
    fps = float(info.fps) if info.fps else 25.0
    signal = source.read_signal(start, end, size=p.size, skip=p.skip)

    def refine(ranges: Sequence[tuple[int, int]]) -> SmallFrames:
        return source.read_signal_ranges(ranges, size=p.size)

    det = detect(signal, start=start, end=end, fps=fps, params=p, refine=refine)
    det.stats["decode_errors"] = signal.errors
    return det


BUILTIN_SETTINGS = tuple(
    f.name for f in fields(DetectorParams) if f.name not in ("detector", "transnet_threshold")
)
"""The settings the built-in detector reads: every :class:`DetectorParams` field but
``detector`` and ``transnet_threshold``."""

register_detector(ShotDetector("builtin", detect_builtin, settings=BUILTIN_SETTINGS))
