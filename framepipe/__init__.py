"""framepipe: n well-chosen frames from videos, multi-view scenes and 3D models, and a
multi-image vision-language model's answer for each clip.

Data flows one way; each stage lives in one place and imports only the stages before it:

==================  ==============================================================================
stage               where
==================  ==============================================================================
inputs              :mod:`framepipe.discovery` (paths and folders -> inputs and skip notes),
                    :mod:`framepipe.inputs` (manifests, remote URIs staged locally, shards)
source              :mod:`framepipe.sources` (one subpackage per kind; ``info``, ``read``, the
                    cheap signal ``read_signal``, what a render sees ``visible_surface``)
shots               :mod:`framepipe.shots` (shot detection over a source's signal)
plan clips          :mod:`framepipe.clips` (``whole``, ``windows``, ``shots`` planners)
select              :mod:`framepipe.samplers` (pure: indices from metadata and signals)
read                :mod:`framepipe.read_clips` (open, plan, select, read one input's clips)
records             :mod:`framepipe.records` (a clip on its way; its record, built once; keys)
prompt              :mod:`framepipe.prompt` and :mod:`framepipe.questions`
generate            :mod:`framepipe.generate` (the backend protocol; model spec, loading,
                    batched answers in process)
answer              :mod:`framepipe.answering` (decoded clips in, records out)
write               :mod:`framepipe.output` (JSONL/Parquet records, part files, merge, images)
engines             :mod:`framepipe.engine` (one protocol; local: decoding worker processes;
                    ray: Ray Data; one decoder supervisor for both)
runs                :mod:`framepipe.runs` (``sample`` and ``caption``, and ``iter_sample`` and
                    ``iter_caption`` record by record, on one skeleton that owns resume and
                    writing)
command line        :mod:`framepipe.cli` (parses options, calls the runs)
==================  ==============================================================================

Plug-in families (source kinds, samplers, clip planners, engines, generation backends)
share one :class:`~framepipe.registry.Registry` type.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from framepipe.version import __version__

# name -> module that defines it: imported on first use (PEP 562), so that a command or a
# library user pays only for what it touches (``framepipe shots`` needs no engine, run or
# model code).
_LAZY = {
    "plan_clips": "framepipe.clips",
    "SampleConfig": "framepipe.config",
    "discover": "framepipe.discovery",
    "ConfigError": "framepipe.errors",
    "DecodeError": "framepipe.errors",
    "FramepipeError": "framepipe.errors",
    "ModelLoadError": "framepipe.errors",
    "PromptError": "framepipe.errors",
    "SamplingError": "framepipe.errors",
    "SourceError": "framepipe.errors",
    "CaptionSummary": "framepipe.runs.caption",
    "Pipeline": "framepipe.runs.caption",
    "caption": "framepipe.runs.caption",
    "iter_caption": "framepipe.runs.caption",
    "iter_sample": "framepipe.runs.sample",
    "sample": "framepipe.runs.sample",
    "get_sampler": "framepipe.samplers",
    "register_sampler": "framepipe.samplers",
    "open_source": "framepipe.sources",
    "ClipResult": "framepipe.types",
    "ClipSpec": "framepipe.types",
    "FrameBatch": "framepipe.types",
    "Selection": "framepipe.types",
    "SourceInfo": "framepipe.types",
    "ViewInfo": "framepipe.types",
}

if TYPE_CHECKING:
    from framepipe.clips import plan_clips
    from framepipe.config import SampleConfig
    from framepipe.discovery import discover
    from framepipe.errors import (
        ConfigError,
        DecodeError,
        FramepipeError,
        ModelLoadError,
        PromptError,
        SamplingError,
        SourceError,
    )
    from framepipe.runs.caption import CaptionSummary, Pipeline, caption, iter_caption
    from framepipe.runs.sample import iter_sample, sample
    from framepipe.samplers import get_sampler, register_sampler
    from framepipe.sources import open_source
    from framepipe.types import ClipResult, ClipSpec, FrameBatch, Selection, SourceInfo, ViewInfo


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'framepipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
    "iter_caption",
    "iter_sample",
    "open_source",
    "plan_clips",
    "register_sampler",
    "sample",
]
