"""Stage functions shared by every engine and command: open a source, plan its clips,
select indices, read frames, and make the record (with :mod:`framepipe.records`).

They are plain functions of plain (picklable) arguments, so the local engine can run them
in worker processes and the Ray engine on a cluster. Errors about one input become
``failed`` records here; nothing about one input stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from framepipe.clips import plan_clips
from framepipe.config import SampleConfig
from framepipe.discover import Input
from framepipe.errors import FramepipeError
from framepipe.records import (
    clip_fields,
    clip_key,
    failed_record,
    input_key,
    key_parts,
    ok_record,
    source_fingerprint,
)
from framepipe.samplers.base import get_sampler
from framepipe.sources.base import Source, open_source
from framepipe.types import ClipResult, ClipSpec, FrameBatch, Selection, SourceInfo

log = logging.getLogger(__name__)


@dataclass
class ClipJob:
    """The outcome of reading one clip: a record (ok or failed) and, if ok, its frames."""

    record: ClipResult
    batch: FrameBatch | None = None
    selection: Selection | None = None
    info: SourceInfo | None = None

    @property
    def ok(self) -> bool:
        return self.record.status == "ok" and self.batch is not None


def select(source: Source, info: SourceInfo, clip: ClipSpec, cfg: SampleConfig) -> Selection:
    name, fn = get_sampler(cfg.sampler)
    sel = fn(info, clip, n=cfg.n, source=source, **cfg.sampler_params)
    if not isinstance(sel, Selection):  # a user's sampler may return plain indices
        sel = Selection(tuple(int(i) for i in sel), name, {"n": cfg.n, **cfg.sampler_params})
    bad = [i for i in sel.indices if not 0 <= i < info.num_frames]
    if bad:
        raise FramepipeError(
            f"sampler {name!r} returned indices outside 0..{info.num_frames - 1}: {bad[:5]}"
        )
    return sel


def iter_clip_jobs(
    item: Input,
    cfg: SampleConfig,
    *,
    extra_key: dict[str, Any] | None = None,
    is_done: Callable[[str], bool] | None = None,
    read_frames: bool = True,
    on_clip: Callable[[str, ClipSpec], None] | None = None,
) -> Iterator[ClipJob]:
    """Open one input, plan its clips, and yield a :class:`ClipJob` per clip not done yet.

    Every failure about this input (cannot open, cannot decode a clip, n too large) is
    yielded as a ``failed`` record; only bugs raise. ``extra_key`` joins the resume key (the
    caption command adds the model and questions); ``is_done`` skips finished clips before
    any frame is decoded. ``on_clip(key, clip)`` is called just before a clip is sampled and
    read (the local engine uses it to know which clip a hung decoder was working on).
    """
    src_id = str(item.path)
    parts = key_parts(cfg, extra_key)
    fp = source_fingerprint(item.path)
    if item.error:
        yield ClipJob(
            failed_record(src_id, item.error, key=input_key(fp, parts, not_an_input=True))
        )
        return
    t0 = time.perf_counter()
    try:
        source = open_source(item.path, item.kind, **cfg.source_options)
    except Exception as exc:
        if not isinstance(exc, FramepipeError):
            log.exception("%s: unexpected error while opening", src_id)
        yield ClipJob(failed_record(src_id, exc, kind=item.kind, key=input_key(fp, parts)))
        return
    with source:
        try:
            info = source.info()
            clips = plan_clips(
                info,
                mode=cfg.clips,
                clip_seconds=cfg.clip_seconds,
                stride_seconds=cfg.stride_seconds,
                source=source,
                **cfg.clip_params,
            )
        except Exception as exc:
            if not isinstance(exc, FramepipeError):
                log.exception("%s: unexpected error while reading metadata", src_id)
            yield ClipJob(failed_record(src_id, exc, kind=item.kind, key=input_key(fp, parts)))
            return
        t_open = time.perf_counter() - t0
        for clip in clips:
            key = clip_key(fp, clip, parts)
            if is_done is not None and is_done(key):
                continue
            if on_clip is not None:
                on_clip(key, clip)
            yield _one_clip(source, info, clip, cfg, key, t_open, read_frames)
            t_open = 0.0


def _one_clip(
    source: Source,
    info: SourceInfo,
    clip: ClipSpec,
    cfg: SampleConfig,
    key: str,
    t_open: float,
    read_frames: bool,
) -> ClipJob:
    sel = None
    t0 = time.perf_counter()
    try:
        sel = select(source, info, clip, cfg)
        t1 = time.perf_counter()
        batch = source.read(list(sel.indices)) if read_frames else None
        t2 = time.perf_counter()
    except Exception as exc:  # one clip's failure never stops the run
        if not isinstance(exc, FramepipeError):
            log.exception("%s: unexpected error on clip %d", info.id, clip.index)
        rec = failed_record(info.id, exc, key=key, **clip_fields(info, clip, sel))
        return ClipJob(rec, None, sel, info)
    timings_s = {
        "open_s": round(t_open, 4),
        "select_s": round(t1 - t0, 4),
        "decode_s": round(t2 - t1, 4),
    }
    rec = ok_record(info, clip, sel, batch, key=key, timings_s=timings_s)
    return ClipJob(rec, batch, sel, info)
