"""The read stage: open one input, plan its clips, select their frames and read them.

:func:`read_clips` is the read stage of every engine and command, and one of the two error
boundaries of a run (the other is the decoder supervisor, :mod:`framepipe.engine.supervisor`,
for a decoder that crashes or hangs): whatever goes wrong with one input or one of its clips
becomes a failed :class:`~framepipe.records.ClipJob` here, and nothing about one input stops
the others. An input's own problem (a :class:`~framepipe.errors.FramepipeError`: a file that
will not open, n too large) is its error as it is; any other exception (a bug in a plug-in,
a library error) also names the ``stage`` where it happened (``open``, ``decode``, or
``input`` after the clips) and has its traceback logged at DEBUG. The one exception is a
:class:`~framepipe.errors.StopRunError` (an error every input would hit, such as missing
credentials for a remote store): it stops the run.

Its functions take plain (picklable) arguments, so the local engine runs it in worker
processes and the Ray engine on a cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

from framepipe.clips import plan_clips
from framepipe.config import SampleConfig
from framepipe.discovery import Input
from framepipe.errors import (
    FramepipeError,
    SamplingError,
    StopRunError,
    captured_warnings,
    one_line_error,
)
from framepipe.inputs import staged_kind
from framepipe.inputs.remote import RemoteStat, discard, remote_stat, stage_for_use
from framepipe.records import (
    ClipJob,
    InputPlan,
    clip_fields,
    done_count,
    key_parts,
    plan_key,
    read_fields,
    record_key,
    source_fingerprint,
)
from framepipe.samplers.base import get_sampler
from framepipe.sources.base import Source, frame_indices, open_source
from framepipe.types import ClipSpec, FrameBatch, Selection, SourceInfo

log = logging.getLogger(__name__)


def select(source: Source, info: SourceInfo, clip: ClipSpec, cfg: SampleConfig) -> Selection:
    """The sampler's selection for ``clip``, checked: what a sampler (a plug-in above all)
    gets wrong is a one-line :class:`FramepipeError` naming it, never a record of frames
    nobody asked for: an error it raises (its traceback logged at DEBUG), a result that is
    no list of frame numbers, no index, more than n, or indices outside the clip."""
    name, fn = get_sampler(cfg.sampler)
    try:
        sel = fn(info, clip, n=cfg.n, source=source, **cfg.sampler_params)
    except FramepipeError:
        raise
    except Exception as exc:
        log.debug("%s: sampler %r failed on clip %d", info.id, name, clip.index, exc_info=True)
        raise FramepipeError(f"sampler {name!r} failed: {one_line_error(exc)}") from exc
    if isinstance(sel, Selection):
        indices = list(sel.indices)
    elif not isinstance(sel, Iterable) or isinstance(sel, (str, bytes, Mapping)):
        raise FramepipeError(
            f"sampler {name!r} returned {type(sel).__name__}, not a Selection or a list of "
            "frame indices"
        )
    else:  # a user's sampler may return plain indices: integers of any type; a float
        try:  # (np.linspace unrounded) is not cut down
            indices = frame_indices(sel, f"sampler {name!r}")
        except TypeError as exc:
            text = str(exc) if str(exc).startswith("sampler") else f"sampler {name!r}: {exc}"
            raise FramepipeError(text) from None
    if not indices:
        raise FramepipeError(f"sampler {name!r} returned no frame index")
    if len(indices) > cfg.n:
        raise FramepipeError(f"sampler {name!r} returned {len(indices)} indices for n={cfg.n}")
    last = min(clip.end_frame, info.num_frames) - 1
    bad = [i for i in indices if not clip.start_frame <= i <= last]
    if bad:
        raise FramepipeError(
            f"sampler {name!r} returned indices outside {clip.start_frame}..{last}: {bad[:5]}"
        )
    if not isinstance(sel, Selection):
        sel = Selection(tuple(indices), name, {"n": cfg.n, **cfg.sampler_params})
    return sel


def checked_read(source: Source, info: SourceInfo, indices: list[int]) -> FrameBatch:
    """``source.read(indices)``, checked: a batch of other frames than those asked for (a
    source kind's bug: another count, other indices) is a one-line :class:`FramepipeError`
    naming the kind, never a record that says frames it does not hold."""
    batch = source.read(indices)
    if not isinstance(batch, FrameBatch):
        raise FramepipeError(
            f"source kind {info.kind!r} read {type(batch).__name__}, not a FrameBatch"
        )
    if list(batch.indices) != indices:
        raise FramepipeError(
            f"source kind {info.kind!r} read frames {list(batch.indices)[:8]} when asked for "
            f"{indices[:8]}"
        )
    return batch


def read_clips(
    item: Input,
    cfg: SampleConfig,
    *,
    extra_key: dict[str, Any] | None = None,
    is_done: Callable[[str], bool] | None = None,
    read_frames: bool = True,
    on_clip: Callable[[str, ClipSpec], None] | None = None,
    on_plan: Callable[[InputPlan], None] | None = None,
    on_download: Callable[[bool], None] | None = None,
    stat: RemoteStat | None = None,
) -> Generator[ClipJob, None, None]:
    """Open one input, plan its clips, and yield a :class:`ClipJob` per clip not done yet,
    ok or failed (an input that cannot be opened or planned: one failed job for the input;
    one that fails to close after its clips: a warning, its clips' records stand).

    ``extra_key`` joins the resume key (the caption run adds the model and questions);
    ``is_done(key)`` skips finished clips before any frame is decoded, and a whole input
    when its plan key is done (the ledger: it is then neither opened nor downloaded);
    ``on_clip(key, clip)`` is called just before a clip is sampled and read (the local
    engine's workers tell the supervisor which clip a hung decoder was on), ``on_plan`` with
    the input's plan once it is read to its end and closed without error, ``on_download``
    while a remote input downloads (see :func:`~framepipe.inputs.remote.stage`: the
    supervisor does not count that time as decoding); ``stat``: a remote input's metadata
    when the caller has just read it (else one request here). A manifest row's
    ``id`` and questions go on every job; a remote input's errors name its URI, never its
    copy in the cache.
    """
    jobs = _read_clips(
        item, cfg, extra_key, is_done, read_frames, on_clip, on_plan, on_download, stat
    )
    try:
        while True:
            with captured_warnings(item.source):  # logged at DEBUG, not printed
                job = next(jobs, None)
            if job is None:
                return
            yield tagged(job, item)
    finally:
        jobs.close()  # closes the source now, also when the caller stops early


def tagged(job: ClipJob, item: Input) -> ClipJob:
    """``job`` with what the input's manifest row adds (its questions, its ``id``); a remote
    input's error names its URI where it named the input's copy in the cache, an
    :func:`~framepipe.discovery.anchored` one's the path as given where it named the
    absolute path."""
    if item.questions is not None and job.fields.get("questions") is None:
        job.fields["questions"] = list(item.questions)
    if item.id is not None and "id" not in job.extra:
        job.fields["extra"] = {**job.extra, "id": item.id}
    if item.uri and job.error is not None:
        job.error = named_by_uri(job.error, item)
    elif item.given and job.error is not None:  # the path as given, as on every engine
        job.error = job.error.replace(str(item.path), item.given)
    return job


def input_failure_key(
    item: Input, cfg: SampleConfig, extra_key: dict[str, Any] | None = None
) -> str:
    """The key of a record that fails the whole input ``item`` (what :func:`read_clips` gives
    such a record), computed without opening it: for the decoder supervisor, whose decoder
    died before it could say."""
    try:
        parts = key_parts(cfg, extra_key)
    except Exception:  # the settings themselves may be what failed
        parts = dict(extra_key or {})
    return record_key(whole_input_fingerprint(item), parts)


def skipped_unopened(
    item: Input,
    cfg: SampleConfig,
    extra_key: dict[str, Any] | None,
    done: Collection[str],
    stat: RemoteStat | None = None,
) -> int:
    """How many clips of ``item`` a resume with ``done`` skips before opening it (what
    :func:`read_clips` checks first: its failure record, or its plan in the ledger), decided
    where no decoder runs, so that a run with nothing left to read starts none; 0 when it
    must be read, or when finding out takes more than a stat: a remote input's plan is
    looked up only with its metadata, ``stat`` (the object's size and ETag or mtime, what
    its plan key holds: a changed object is read again)."""
    if item.uri and not item.error and stat is None:
        return 0
    try:
        parts = key_parts(cfg, extra_key)
        whole = done_count(done, record_key(whole_input_fingerprint(item), parts))
        if whole or item.error:
            return whole
        return done_count(done, plan_key(input_fingerprint(item, stat), parts))
    except Exception:  # the read stage says what is wrong
        return 0


def _read_clips(
    item: Input,
    cfg: SampleConfig,
    extra_key: dict[str, Any] | None,
    is_done: Callable[[str], bool] | None,
    read_frames: bool,
    on_clip: Callable[[str, ClipSpec], None] | None,
    on_plan: Callable[[InputPlan], None] | None,
    on_download: Callable[[bool], None] | None = None,
    known: RemoteStat | None = None,
) -> Generator[ClipJob, None, None]:
    src = item.source
    whole: str | None = None  # the key of a failure of the whole input
    started = False  # whether a clip of the input was reached
    local, own_copy = item.path, False
    source: Source | None = None
    kind = item.kind
    try:
        parts = key_parts(cfg, extra_key)
        stat: RemoteStat | FramepipeError | None = known
        if item.uri and not item.error and stat is None:
            try:
                stat = remote_stat(item.uri, cfg.storage_options)
            except StopRunError:
                raise
            except FramepipeError as exc:
                stat = exc
        fp = input_fingerprint(item, stat)
        whole = record_key(whole_input_fingerprint(item), parts)
        if item.error:  # not an input (yet): a broken link, a file it may not read ...
            if is_done is None or not is_done(whole):  # its failed record counts as done
                yield ClipJob(src, {"key": whole}).fail(item.error)
            return
        if is_done is not None and is_done(whole):
            return
        if isinstance(stat, FramepipeError):
            raise stat
        planned = plan_key(fp, parts)
        if is_done is not None and is_done(planned):
            return
        t0 = time.perf_counter()
        if stat is not None:  # staged here, in the read stage (a worker), not the driver
            local, own_copy = stage_for_use(
                src,
                item.path,
                stat,
                keep=cfg.keep_downloads,
                storage_options=cfg.storage_options,
                stall_s=cfg.download_stall_s,
                on_download=on_download,
            )
        kind = staged_kind(item, local, cfg.kind)
        source = open_source(local, kind, **cfg.source_options)
        info = source.info()
        if item.uri or item.given:  # records name the URI (not the cached copy), the path given
            info = dataclasses.replace(info, id=item.source)
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
        t_open = time.perf_counter() - t0
        keys = [record_key(fp, parts, clip) for clip in clips]
        for clip, key in zip(clips, keys):
            if is_done is not None and is_done(key):
                continue
            started = True
            if on_clip is not None:
                on_clip(key, clip)
            yield _one_clip(source, info, clip, cfg, key, t_open, read_frames, whole)
            t_open = 0.0
        closing, source = source, None
        try:
            closing.close()
        except Exception as exc:  # every clip has its record: a failed record here would
            # outlive a clean re-run (it skips the clips, and nothing would supersede it)
            log.warning("closing failed: %s", one_line_error(exc, src))
        if on_plan is not None:
            on_plan(InputPlan(planned, tuple(keys), src, of=whole or ""))
    except StopRunError:
        raise
    except Exception as exc:
        stage = "input" if started else "open"
        if not isinstance(exc, FramepipeError):
            log.debug("%s: unexpected error (%s stage)", src, stage, exc_info=True)
        if whole is None:  # the settings themselves failed
            whole = input_failure_key(item, cfg, extra_key)
        yield ClipJob(src, {"kind": kind, "key": whole}).fail_unexpected(exc, stage)
    finally:
        if source is not None:  # the caller stopped early (or a failure above)
            try:
                source.close()
            except Exception:
                log.debug("%s: closing failed", src, exc_info=True)
        if own_copy:
            discard(local)


def _one_clip(
    source: Source,
    info: SourceInfo,
    clip: ClipSpec,
    cfg: SampleConfig,
    key: str,
    t_open: float,
    read_frames: bool,
    whole: str,
) -> ClipJob:
    sel = None
    t0 = time.perf_counter()
    try:
        sel = select(source, info, clip, cfg)
        t1 = time.perf_counter()
        batch = checked_read(source, info, list(sel.indices)) if read_frames else None
        t2 = time.perf_counter()
        timings_s = {
            "open_s": round(t_open, 4),
            "select_s": round(t1 - t0, 4),
            "decode_s": round(t2 - t1, 4),
        }
        fields = read_fields(info, clip, sel, batch, key=key, timings_s=timings_s, of_input=whole)
    except Exception as exc:  # one clip's failure never stops the run
        if not isinstance(exc, FramepipeError):
            log.debug("%s: unexpected error on clip %d", info.id, clip.index, exc_info=True)
        fields = {**clip_fields(info, clip, sel), "key": key, "extra": {"input_key": whole}}
        return ClipJob(info.id, fields).fail_unexpected(exc, "decode")
    return ClipJob(info.id, fields, batch)


def input_fingerprint(item: Input, stat: RemoteStat | FramepipeError | None) -> dict[str, Any]:
    """The identity of ``item`` in resume keys: a local file's path, size and mtime; a remote
    object's URI, size and ETag or mtime (``stat``: its metadata, one request and no
    download, or the error reading it); with the clip range of a manifest row, when it has
    one, and its ``id`` (two rows naming one clip under two ids are two records, each with
    its id, whichever finishes first)."""
    if isinstance(stat, RemoteStat):
        fp = stat.fingerprint()
    elif item.uri:
        fp = {"uri": item.uri}
    else:
        fp = source_fingerprint(item.path)
    return {**fp, **_row_parts(item)}


def _row_parts(item: Input) -> dict[str, Any]:
    """What a manifest row adds to an input's identity: its clip range and its id."""
    out: dict[str, Any] = {}
    if item.start_s is not None or item.end_s is not None:
        out["range_s"] = [item.start_s, item.end_s]
    if item.id is not None:
        out["id"] = item.id
    return out


def whole_input_fingerprint(item: Input) -> dict[str, Any]:
    """The identity in the key of a failure of the whole input: its URI, or a local file's
    absolute path (and range and id), without size, ETag or modification time, so that a failure
    while the input could not be reached, read or found (missing, half copied, its server
    down) is superseded by the clips of a later run (their ``input_key``) once it can, and
    no metadata request is needed for it."""
    out: dict[str, Any] = {"uri": item.uri} if item.uri else {"path": absolute(item.path)}
    return {**out, **_row_parts(item)}


def absolute(path: Path) -> str:
    """``path`` resolved as the resume keys name it (as given where it cannot be)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a link loop, before Python 3.13
        return str(path)


def named_by_uri(error: str, item: Input) -> str:
    """``error`` with each copy of the remote input ``item`` in the cache (a file below a
    folder of the cache) named by the URI: records never name a copy, whose place differs
    between runs and machines. A folder of the cache itself (one that cannot be created)
    stays named."""
    copy = re.escape(str(item.path.parent.parent)) + r"(?:/[\w.-]+){2,}"
    return re.sub(copy, str(item.uri), re.sub(copy + ": ", "", error))


def restrict_clips(
    clips: list[ClipSpec], info: SourceInfo, start_s: float | None, end_s: float | None
) -> list[ClipSpec]:
    """The planned ``clips`` cut to the time range ``[start_s, end_s)`` (a manifest row's
    range): a clip keeps its frames whose timestamps fall in the range, and a clip with none
    is dropped. SamplingError when the source has no timestamps (not a video) or no frame
    falls in the range."""
    # no start_s: from the first frame, even one before 0 s (a negative start time)
    lo = -float("inf") if start_s is None else start_s
    hi = float("inf") if end_s is None else end_s
    what = f"clip range {'start' if start_s is None else f'{lo:g}'}"
    what += f"..{'end' if end_s is None else f'{hi:g}'} s"
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
        if c_start == -float("inf"):
            c_start = ts[a]
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
