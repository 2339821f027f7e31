"""The run configuration shared by ``sample`` and ``caption``: how clips are cut and frames
chosen (:class:`SampleConfig`)."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from framepipe.clips import check_clips, planner_of
from framepipe.errors import ConfigError, check_fields
from framepipe.extras import check_extras
from framepipe.inputs.download import DEFAULT_STALL_S
from framepipe.registry import canonical_params
from framepipe.samplers.base import Sampler, check_sampler, get_sampler
from framepipe.sources.base import check_source_options


@dataclass
class SampleConfig:
    """How clips are cut and frames chosen; the same for ``sample`` and ``caption``."""

    n: int = 8
    """Frames (or views) per clip."""
    sampler: str | Sampler = "uniform"
    """A registry name, ``module:function``, or a callable."""
    sampler_params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters for the sampler (mode, fps, overflow ...)."""
    clips: str = "whole"
    """``whole``, ``windows`` or ``shots``."""
    clip_seconds: float | None = None
    stride_seconds: float | None = None
    clip_params: dict[str, Any] = field(default_factory=dict)
    """Extra parameters for the clip planner (e.g. shot min/max duration)."""
    kind: str | None = None
    """Force the kind of every input (``video``, ``multiview``, ``render``)."""
    source_options: dict[str, Any] = field(default_factory=dict)
    """Options passed to the source (render size, cameras, backend ...)."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for remote inputs (``endpoint_url``, ``anon``, ``config_kwargs`` ...),
    given to the filesystem of every remote input; not part of the resume keys (where an
    object is read from does not change its frames)."""
    keep_downloads: bool = True
    """Keep each downloaded remote input in the cache, where a later run that opens it again
    (a re-run, a resume) uses it while the object is unchanged. False: each input is
    downloaded to a copy of its own that is removed once its clips are read, so the cache
    never grows (a current copy kept by an earlier run is still used, and left in place)."""
    download_stall_s: float = DEFAULT_STALL_S
    """Seconds a remote input's download may receive nothing before it is stopped (that
    input fails); a download that makes progress may take as long as it needs. Not part of
    the resume keys."""

    def __post_init__(self) -> None:
        if isinstance(self.n, numbers.Integral) and not isinstance(self.n, bool):
            self.n = int(self.n)  # a numpy integer is a count like any other (and JSON's)

    def check(self, kinds: Iterable[str] | None = None) -> None:
        """ConfigError (one line) for a setting the sampler, the clip planner or the sources
        refuse (their own checks: an unknown sampler, n < 1, an option one does not take, a
        bad value), before any input is read. The source options are checked against
        ``kinds`` (the kinds of the run's inputs, once known), else ``kind``, else every
        kind."""
        check_sampler(self.sampler, self.n, self.sampler_params)
        if not self.download_stall_s > 0:
            raise ConfigError(f"download stall ({self.download_stall_s}) must be > 0 seconds")
        check_extras(self.sampler_params)  # e.g. detector=transnetv2: its extra, up front
        check_extras(self.clip_params)
        check_clips(self.clips, self.clip_seconds, self.stride_seconds, **self.clip_params)
        if kinds is None and self.kind is not None:
            kinds = [self.kind]
        check_source_options(self.source_options, kinds)

    def key_parts(self) -> dict[str, Any]:
        """What, with the source, determines the selected frames (for resume keys). Sampler
        and clip planner options given at their default are left out
        (:func:`~framepipe.registry.canonical_params`): giving one is the same setting as
        leaving it out; so are the windows said another way:
        ``clip_seconds`` alone (``--clip-seconds``, which implies windows, the form the keys
        keep) or with ``clips="windows"``, a stride equal to the length (the default), and
        seconds as int or float."""
        name, fn = get_sampler(self.sampler)
        clips = self.clips
        length, stride = _seconds(self.clip_seconds), _seconds(self.stride_seconds)
        if length is not None and clips == "windows":
            clips = "whole"
        if stride is not None and stride == length:
            stride = None
        return {
            "n": self.n,
            "sampler": name,
            "sampler_params": canonical_params(fn, self.sampler_params),
            "clips": clips,
            "clip_seconds": length,
            "stride_seconds": stride,
            "clip_params": canonical_params(planner_of(clips), self.clip_params),
            "source_options": self.source_options,
            "kind": self.kind,
        }


def _seconds(value: float | None) -> float | None:
    """Seconds as the keys hold them (a float: 1 and 1.0 are one setting)."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return float(value) if is_number else value  # type: ignore[arg-type]


def as_sample_config(value: Any, what: str = "cfg") -> SampleConfig:
    """The run's :class:`SampleConfig` from what a caller plausibly passes as ``what``: a
    SampleConfig, None (the defaults), n as an int (``sample(paths, out, 8)``) or a mapping
    of SampleConfig's fields; ConfigError naming ``what`` for a field it does not have, a
    TypeError for anything else."""
    if value is None:
        return SampleConfig()
    if isinstance(value, SampleConfig):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return SampleConfig(n=int(value))
    if isinstance(value, Mapping):
        check_fields(SampleConfig, value, what)
        return SampleConfig(**value)
    raise TypeError(
        f"{what} must be a SampleConfig (or n, the frames per clip, as an int), "
        f"not {type(value).__name__}: e.g. SampleConfig(n=8)"
    )
