"""Engines run the stages over many inputs, behind one protocol (:mod:`.base`): the run hands
an engine its tasks and what to do with every clip, the engine yields finished records.

- :mod:`.local`: :class:`LocalEngine`, decoding in worker processes on this machine while this
  process answers;
- :mod:`.ray`: the Ray engine (imported on use), the same stages on a Ray cluster through Ray
  Data (:mod:`.ray_stages`: its read and generation actors);
- :mod:`.supervisor`: the decoder process both use (:mod:`.worker`: its child side;
  :mod:`.transfer`: frames through shared memory).
"""

from framepipe.engine.base import (
    DEFAULT_DECODE_TIMEOUT_S,
    ENGINES,
    Engine,
    EngineOptions,
    EngineTask,
    RayOptions,
    Resume,
    Work,
    default_workers,
    open_engine,
)
from framepipe.engine.local import LocalEngine

__all__ = [
    "DEFAULT_DECODE_TIMEOUT_S",
    "ENGINES",
    "Engine",
    "EngineOptions",
    "EngineTask",
    "LocalEngine",
    "RayOptions",
    "Resume",
    "Work",
    "default_workers",
    "open_engine",
]
