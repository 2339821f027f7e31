"""The shots of a source: :func:`detect_shots`, cached per open source.

Clip planning (``--clips shots``), the keyframe sampler and ``framepipe shots`` all call
:func:`detect_shots`, so ``--clips shots --sampler keyframe`` detects once per video: a later
call for a range inside one already detected (with the same settings) is served from it.

The detector is a setting (``detector``: ``builtin`` or ``transnetv2``, see
:mod:`framepipe.shots.detectors`), part of the cache key like every other. The frames come
from the source (the built-in detector: ``source.read_signal`` and, around candidate cuts,
``source.read_signal_ranges``; TransNetV2: ``source.read_small`` at 48x27); this stage never
opens a file.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from framepipe.errors import FramepipeError, SamplingError, one_line_error
from framepipe.shots.detector import DetectorParams, ShotDetection
from framepipe.shots.detectors import checked_detector
from framepipe.types import SourceInfo

if TYPE_CHECKING:
    from framepipe.sources.base import Source

log = logging.getLogger(__name__)

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], ShotDetection]] = (
    weakref.WeakKeyDictionary()
)


def _params_key(p: DetectorParams) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in p.to_json().items()))


def detect_shots(
    source: Source,
    info: SourceInfo | None = None,
    start: int = 0,
    end: int | None = None,
    **params: Any,
) -> ShotDetection:
    """Detect the shots of frames ``[start, end)`` of ``source`` (default: all of it).

    ``params`` are :class:`~framepipe.shots.DetectorParams` fields, ``detector`` among
    them; a setting the chosen detector does not read is refused (ConfigError). For the
    built-in detector the frames are the source's cheap signal
    (``source.read_signal``: for videos a fast decode at the tiny size that skips B-frames;
    for other kinds every frame, from ``source.read_small``). A detector that cannot run
    here (TransNetV2 without its extra) raises MissingDependencyError before any frame is
    read.
    """
    info = info or source.info()
    end = info.num_frames if end is None else end
    if not 0 <= start < end <= info.num_frames:
        raise SamplingError(f"{info.id}: range [{start}, {end}) outside 0..{info.num_frames}")
    p, detector = checked_detector(params)
    key = _params_key(p)
    try:
        cache = _CACHE.setdefault(source, {})
    except TypeError:  # a source that cannot be weakly referenced: no cache
        cache = {}
    for (s, e, k), det in cache.items():
        if k == key and s <= start and end <= e:
            return det if (s, e) == (start, end) else det.restrict(start, end)
    try:
        det = detector.detect(source, info, start, end, p)
    except FramepipeError:
        raise
    except Exception as exc:  # a plug-in's bug: one line naming it (traceback at DEBUG)
        log.debug("%s: shot detector %r failed", info.id, p.detector, exc_info=True)
        raise FramepipeError(f"shot detector {p.detector!r} failed: {one_line_error(exc)}") from exc
    if not isinstance(det, ShotDetection):
        raise FramepipeError(
            f"shot detector {p.detector!r} returned {type(det).__name__}, not a ShotDetection"
        )
    det.stats["detector"] = p.detector
    log.debug("%s: shots in [%d, %d): %s", info.id, start, end, det.stats)
    cache[(start, end, key)] = det
    return det
