"""The shots of a source: :func:`detect_shots`, cached per open source.

Clip planning (``--clips shots``), the keyframe sampler and ``framepipe shots`` all call
:func:`detect_shots`, so ``--clips shots --sampler keyframe`` detects once per video: a later
call for a range inside one already detected (with the same settings) is served from it.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.errors import SamplingError
from framepipe.shots.detector import DetectorParams, ShotDetection, detect
from framepipe.types import SourceInfo

if TYPE_CHECKING:
    from framepipe.sources._signal import SmallFrames
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

    ``params`` are :class:`~framepipe.shots.DetectorParams` fields. Videos are read
    through the fast signal decoder; other kinds of source through ``source.read_small``.
    """
    info = info or source.info()
    end = info.num_frames if end is None else end
    if not 0 <= start < end <= info.num_frames:
        raise SamplingError(f"{info.id}: range [{start}, {end}) outside 0..{info.num_frames}")
    p = DetectorParams.from_params(params)
    key = _params_key(p)
    try:
        cache = _CACHE.setdefault(source, {})
    except TypeError:  # a source that cannot be weakly referenced: no cache
        cache = {}
    for (s, e, k), det in cache.items():
        if k == key and s <= start and end <= e:
            return det if (s, e) == (start, end) else det.restrict(start, end)
    det = _detect_uncached(source, info, start, end, p)
    cache[(start, end, key)] = det
    return det


def _detect_uncached(
    source: Source, info: SourceInfo, start: int, end: int, p: DetectorParams
) -> ShotDetection:
    from framepipe.sources import _signal

    fps = float(info.fps) if info.fps else 25.0
    if info.kind == "video" and info.timestamps_s is not None and _is_file(source):
        signal = _signal.read_signal(source.path, info, start, end, size=p.size, skip=p.skip)

        def refine(ranges: Any) -> SmallFrames:
            return _signal.read_full_ranges(source.path, info, ranges, size=p.size)

        det = detect(signal, start=start, end=end, fps=fps, params=p, refine=refine)
        det.stats["decode_errors"] = signal.errors
    else:
        small = _signal.rgb_to_yuv(source.read_small(start, end, size=p.size))
        signal = _signal.SmallFrames(np.arange(start, end, dtype=np.int64), small)
        det = detect(signal, start=start, end=end, fps=fps, params=p)
    log.debug("%s: shots in [%d, %d): %s", info.id, start, end, det.stats)
    return det


def _is_file(source: Source) -> bool:
    try:
        return source.path.is_file()
    except (AttributeError, OSError):
        return False
