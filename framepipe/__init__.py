"""framepipe: n well-chosen frames from videos, multi-view scenes and 3D models, and a
multi-image vision-language model's answer for each clip."""

from framepipe._version import __version__
from framepipe.clips import plan_clips
from framepipe.config import SampleConfig
from framepipe.discover import discover
from framepipe.errors import (
    ConfigError,
    DecodeError,
    FramepipeError,
    ModelLoadError,
    PromptError,
    SamplingError,
    SourceError,
)
from framepipe.runs.caption import CaptionSummary, Pipeline, caption
from framepipe.runs.sample import sample
from framepipe.samplers import get_sampler, register_sampler
from framepipe.sources import open_source
from framepipe.types import ClipResult, ClipSpec, FrameBatch, Selection, SourceInfo, ViewInfo

__all__ = [
    "CaptionSummary",
    "ClipResult",
    "ClipSpec",
    "ConfigError",
    "DecodeError",
    "FrameBatch",
    "FramepipeError",
    "ModelLoadError",
    "Pipeline",
    "PromptError",
    "SampleConfig",
    "SamplingError",
    "Selection",
    "SourceError",
    "SourceInfo",
    "ViewInfo",
    "__version__",
    "caption",
    "discover",
    "get_sampler",
    "open_source",
    "plan_clips",
    "register_sampler",
    "sample",
]
