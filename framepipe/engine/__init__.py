"""Engines run the stage functions over many inputs: :class:`LocalEngine` overlaps decoding
in worker processes with the caller's work (generation) on this machine; the Ray engine
(:mod:`framepipe.engine.ray`, imported on use) runs them on a Ray cluster through Ray Data,
with the caption run's answering (:mod:`framepipe.engine.answer`) in generation actors."""

from framepipe.engine.local import DEFAULT_DECODE_TIMEOUT_S, EngineTask, LocalEngine

__all__ = ["DEFAULT_DECODE_TIMEOUT_S", "EngineTask", "LocalEngine"]
