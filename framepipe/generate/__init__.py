"""The generator stage: load a LLaVA-style multi-image model once and answer clips.

:class:`ModelSpec` reads a model's config and processor (no weights) for checks before any
heavy work; :class:`Generator` loads the weights and answers :class:`Request` objects in
batches; :class:`OpenAIBackend` asks an OpenAI-compatible server instead;
:func:`make_tiny_model` builds a tiny random-weight model for tests and offline runs.
"""

from framepipe.generate.config import (
    DEFAULT_MODEL,
    Answer,
    GenerationSettings,
    ModelConfig,
    Request,
)
from framepipe.generate.device import Runtime, cpu_has_fast_bf16, resolve_runtime
from framepipe.generate.generator import Generator
from framepipe.generate.server import OpenAIBackend
from framepipe.generate.spec import ModelSpec, tokens_per_image
from framepipe.generate.tiny import is_random, make_tiny_model

__all__ = [
    "DEFAULT_MODEL",
    "Answer",
    "GenerationSettings",
    "Generator",
    "ModelConfig",
    "ModelSpec",
    "OpenAIBackend",
    "Request",
    "Runtime",
    "cpu_has_fast_bf16",
    "is_random",
    "make_tiny_model",
    "resolve_runtime",
    "tokens_per_image",
]
