"""Shot detection: the stage below clip planning and the samplers.

:func:`detect_shots` finds the hard cuts, dissolves and fades of a source from frames the
source hands it and caches the result per open source and settings. Clip planning
(``--clips shots``, :mod:`framepipe.clips`), the keyframe sampler
(:mod:`framepipe.samplers.keyframe`) and ``framepipe shots`` all use it. The detector is a
setting (``detector``, :mod:`framepipe.shots.detectors`): the built-in one
(:mod:`framepipe.shots.detector`, on the cheap signal) or TransNetV2
(:mod:`framepipe.shots.transnet`, the ``transnet`` extra).
"""

from framepipe.shots.cache import detect_shots
from framepipe.shots.detector import DetectorParams, ShotDetection, Transition
from framepipe.shots.detectors import checked_params

__all__ = ["DetectorParams", "ShotDetection", "Transition", "checked_params", "detect_shots"]
