"""Engines run the stage functions over many inputs: :class:`LocalEngine` overlaps decoding
in worker processes with the caller's work (generation) on this machine."""

from framepipe.engine.local import DEFAULT_DECODE_TIMEOUT_S, EngineTask, LocalEngine

__all__ = ["DEFAULT_DECODE_TIMEOUT_S", "EngineTask", "LocalEngine"]
