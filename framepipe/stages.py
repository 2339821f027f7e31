"""Stage functions shared by every engine and command: open a source, plan its clips,
select indices, read frames, and make the record (with :mod:`framepipe.records`).

They are plain functions of plain (picklable) arguments, so the local engine can run them
in worker processes and the Ray engine on a cluster. Errors about one input become
``failed`` records here; nothing about one input stops the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from framepipe.clips import plan_clips
from framepipe.config import SampleConfig
from framepipe.discover import Input
from framepipe.errors import FramepipeError, SamplingError
from framepipe.inputs.remote import RemoteStat, discard, remote_stat, stage_for_use
from framepipe.records import (
    clip_fields,
    clip_key,
    derive,
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
    jobs = _clip_jobs(item, cfg, extra_key, is_done, read_frames, on_clip)
    try:
        for job in jobs:
            job.record = tag_record(job.record, item)
            yield job
    finally:
        jobs.close()  # closes the source now, also when the caller stops early


def input_fingerprint(
    item: Input, cfg: SampleConfig, *, stat: RemoteStat | FramepipeError | None = None
) -> dict[str, Any]:
    """The identity of ``item`` in resume keys: a local file's path, size and mtime; a remote
    object's URI, size and ETag or mtime (one metadata request, no download); with the clip
    range of a manifest row, when it has one. ``stat``: the remote object's metadata (or
    the error reading it), when already known."""
    if isinstance(stat, RemoteStat):
        fp = stat.fingerprint()
    elif item.uri and not item.error and stat is None:
        try:
            fp = remote_stat(item.uri, cfg.storage_options).fingerprint()
        except FramepipeError:
            fp = {"uri": item.uri}
    elif item.uri:
        fp = {"uri": item.uri}
    else:
        fp = source_fingerprint(item.path)
    if item.start_s is not None or item.end_s is not None:
        fp["range_s"] = [item.start_s, item.end_s]
    return fp


def whole_input_fingerprint(
    item: Input, cfg: SampleConfig, fp: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The identity in the key of a failure of the whole input: ``fp`` (the input's
    fingerprint) for a local file; for a remote one its URI (and range) only, without size
    and ETag, so that a failure while the object could not be reached is superseded by the
    clips of a later run (their ``input_key``), and no metadata request is needed for it."""
    if item.uri:
        out: dict[str, Any] = {"uri": item.uri}
        if item.start_s is not None or item.end_s is not None:
            out["range_s"] = [item.start_s, item.end_s]
        return out
    return fp if fp is not None else input_fingerprint(item, cfg)


def tag_record(rec: ClipResult, item: Input) -> ClipResult:
    """``rec`` with what the input's manifest row adds: its ``id`` (as ``extra["id"]``) and
    its questions (those the clip is asked); for a remote input, its error names the URI
    where it named the input's copy in the cache (:func:`named_by_uri`)."""
    fields: dict[str, Any] = {}
    if item.uri and rec.error is not None:
        error = named_by_uri(rec.error, item)
        if error != rec.error:
            fields["error"] = error
    if item.questions is not None and rec.questions is None:
        fields["questions"] = list(item.questions)
    if item.id is not None and "id" not in rec.extra:
        fields["extra"] = {"id": item.id}
    return derive(rec, **fields) if fields else rec


def named_by_uri(error: str, item: Input) -> str:
    """``error`` with each copy of the remote input ``item`` in the cache (a file below a
    folder of the cache) named by the URI: records never name a copy, whose place differs
    between runs and machines. A folder of the cache itself (one that cannot be created)
    stays named."""
    copy = re.escape(str(item.path.parent.parent)) + r"(?:/[\w.-]+){2,}"
    return re.sub(copy, str(item.uri), re.sub(copy + ": ", "", error))


def _clip_jobs(
    item: Input,
    cfg: SampleConfig,
    extra_key: dict[str, Any] | None,
    is_done: Callable[[str], bool] | None,
    read_frames: bool,
    on_clip: Callable[[str, ClipSpec], None] | None,
) -> Generator[ClipJob, None, None]:
    src_id = item.source
    parts = key_parts(cfg, extra_key)
    stat: RemoteStat | FramepipeError | None = None
    if item.uri and not item.error:
        try:
            stat = remote_stat(item.uri, cfg.storage_options)
        except FramepipeError as exc:
            stat = exc
    fp = input_fingerprint(item, cfg, stat=stat)
    ifp = whole_input_fingerprint(item, cfg, fp)
    whole = input_key(ifp, parts)  # the key of a failure of the whole input (on clip records)
    if is_done is not None and is_done(
        input_key(ifp, parts, not_an_input=True) if item.error else whole
    ):  # its failed record counts as done (retry_failed=False)
        return
    if item.error:
        yield ClipJob(
            failed_record(src_id, item.error, key=input_key(ifp, parts, not_an_input=True))
        )
        return
    t0 = time.perf_counter()
    local, own_copy = item.path, False
    try:
        try:
            if isinstance(stat, FramepipeError):
                raise stat
            if stat is not None:  # staged here, in the decode stage (a worker), not the driver
                local, own_copy = stage_for_use(
                    item.source,
                    item.path,
                    stat,
                    keep=cfg.keep_downloads,
                    storage_options=cfg.storage_options,
                )
            source = open_source(local, item.kind, **cfg.source_options)
        except Exception as exc:
            if not isinstance(exc, FramepipeError):
                log.exception("%s: unexpected error while opening", src_id)
            yield ClipJob(failed_record(src_id, exc, kind=item.kind, key=whole))
            return
        with contextlib.closing(
            _source_jobs(source, item, cfg, fp, parts, whole, t0, is_done, read_frames, on_clip)
        ) as jobs:
            yield from jobs
    finally:
        if own_copy:
            discard(local)


def _source_jobs(
    source: Source,
    item: Input,
    cfg: SampleConfig,
    fp: dict[str, Any],
    parts: dict[str, Any],
    whole: str,
    t0: float,
    is_done: Callable[[str], bool] | None,
    read_frames: bool,
    on_clip: Callable[[str, ClipSpec], None] | None,
) -> Generator[ClipJob, None, None]:
    """The jobs of the clips of the open ``source`` not done yet (closed at the end)."""
    src_id = item.source
    with source:
        try:
            info = source.info()
            if item.uri:  # records name the URI, not the cached copy
                info = dataclasses.replace(info, id=item.uri)
            clips = plan_clips(
                info,
                mode=cfg.clips,
                clip_seconds=cfg.clip_seconds,
                stride_seconds=cfg.stride_seconds,
                source=source,
                **cfg.clip_params,
            )
            if item.start_s is not None or item.end_s is not None:
                clips = restrict_clips(clips, info, item.start_s, item.end_s)
        except Exception as exc:
            if not isinstance(exc, FramepipeError):
                log.exception("%s: unexpected error while reading metadata", src_id)
            yield ClipJob(failed_record(src_id, exc, kind=item.kind, key=whole))
            return
        t_open = time.perf_counter() - t0
        for clip in clips:
            key = clip_key(fp, clip, parts)
            if is_done is not None and is_done(key):
                continue
            if on_clip is not None:
                on_clip(key, clip)
            yield _one_clip(source, info, clip, cfg, key, t_open, read_frames, whole)
            t_open = 0.0


def _one_clip(
    source: Source,
    info: SourceInfo,
    clip: ClipSpec,
    cfg: SampleConfig,
    key: str,
    t_open: float,
    read_frames: bool,
    whole: str | None = None,
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
        of_input = {} if whole is None else {"input_key": whole}
        rec = failed_record(info.id, exc, key=key, extra=of_input, **clip_fields(info, clip, sel))
        return ClipJob(rec, None, sel, info)
    timings_s = {
        "open_s": round(t_open, 4),
        "select_s": round(t1 - t0, 4),
        "decode_s": round(t2 - t1, 4),
    }
    rec = ok_record(info, clip, sel, batch, key=key, timings_s=timings_s, of_input=whole)
    return ClipJob(rec, batch, sel, info)


def restrict_clips(
    clips: list[ClipSpec], info: SourceInfo, start_s: float | None, end_s: float | None
) -> list[ClipSpec]:
    """The planned ``clips`` cut to the time range ``[start_s, end_s)`` (a manifest row's
    range): a clip keeps its frames whose timestamps fall in the range, and a clip with none
    is dropped. SamplingError when the source has no timestamps (not a video) or no frame
    falls in the range."""
    lo = 0.0 if start_s is None else start_s
    hi = float("inf") if end_s is None else end_s
    what = f"clip range {lo:g}..{'end' if end_s is None else f'{hi:g}'} s"
    if info.timestamps_s is None:
        raise SamplingError(f"{info.id}: a {what} applies to videos, not to a {info.kind} input")
    ts = info.timestamps_s
    out: list[ClipSpec] = []
    for clip in clips:
        inside = [i for i in range(clip.start_frame, clip.end_frame) if lo <= ts[i] < hi]
        if not inside:
            continue
        a, b = inside[0], inside[-1] + 1
        c_start = lo if clip.start_s is None else max(clip.start_s, lo)
        c_end = hi if clip.end_s is None else min(clip.end_s, hi)
        out.append(
            dataclasses.replace(
                clip,
                start_frame=a,
                end_frame=b,
                start_s=c_start,
                end_s=None if c_end == float("inf") else c_end,
            )
        )
    if not out:
        last = info.end_s if info.end_s is not None else ts[-1]
        raise SamplingError(f"{info.id}: no frame in the {what} (the video ends at {last:g} s)")
    return out
