"""Samplers choose which frames of a clip the model sees. Find one by name with
:func:`get_sampler`; register your own with :func:`register_sampler`."""

from framepipe.samplers.base import (
    OverflowPolicy,
    Sampler,
    available_samplers,
    get_sampler,
    register_sampler,
)
from framepipe.samplers.uniform import uniform, uniform_indices

__all__ = [
    "OverflowPolicy",
    "Sampler",
    "available_samplers",
    "get_sampler",
    "register_sampler",
    "uniform",
    "uniform_indices",
]
