"""Shot detection: the stage below clip planning and the samplers.

:func:`detect_shots` finds the hard cuts, dissolves and fades of a source from its cheap
signal (tiny frames) and caches the result per open source. Clip planning
(``--clips shots``, :mod:`framepipe.clips`), the keyframe sampler
(:mod:`framepipe.samplers.keyframe`) and ``framepipe shots`` all use it. The algorithm is in
:mod:`framepipe.shots.detector`.
"""

from framepipe.shots.cache import detect_shots
from framepipe.shots.detector import DetectorParams, ShotDetection, Transition

__all__ = ["DetectorParams", "ShotDetection", "Transition", "detect_shots"]
