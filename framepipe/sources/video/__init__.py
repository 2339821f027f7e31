"""The ``video`` kind: exact frames from video files (:mod:`.source`), with the frame index
(:mod:`.index`, :mod:`.decode`), the PyAV reader (:mod:`.pyav`), decord where it is known
exact (:mod:`.decord_reader`) and the cheap low-resolution read for shot detection
(:mod:`.lowres`)."""

from framepipe.sources.video.source import VideoSource

__all__ = ["VideoSource"]
