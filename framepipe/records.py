"""The clip record, made in one place: an ``ok`` record, a ``failed`` record, and the resume
keys that let a re-run skip what is done.

Every run and engine builds its records with these functions and never sets a record's
attributes (:class:`~framepipe.types.ClipResult` is frozen): a stage that adds to a record
(the paths of the saved frames, the model's answers) derives a new one with :func:`derive`,
and one that fails it uses :func:`fail`. The one-line error text of a failed record, which
names the file, is written only by :func:`failed_record`.

Resume keys: a clip's key (:func:`clip_key`) is a digest of the input's identity
(:func:`source_fingerprint`: absolute path, size, modification time), the clip's range and
the settings that determine its frames and answers (:func:`key_parts`). A record that fails
a whole input before any clip is known gets an input-level key (:func:`input_key`), so that
it is retried, and replaced, on the next run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.errors import one_line_error
from framepipe.types import (
    ClipResult,
    ClipSpec,
    FrameBatch,
    Selection,
    SourceInfo,
    round_times,
    timestamps_to_list,
)
from framepipe.utils import stable_digest

if TYPE_CHECKING:
    from framepipe.config import SampleConfig

# -- resume keys ----------------------------------------------------------------------------


def source_fingerprint(path: Path) -> dict[str, Any]:
    """Identity of an input for resume keys: its absolute path, size and modification time
    (so ``videos/a.mp4`` and ``/data/videos/a.mp4`` are the same input)."""
    try:
        resolved = str(path.resolve())
        st = path.stat()
        return {"path": resolved, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except (OSError, RuntimeError):  # RuntimeError: a link loop, before Python 3.13
        return {"path": str(path)}


def local_weights_fingerprint(folder: Path) -> list[list[Any]]:
    """Names, sizes and modification times of a local model's weight and config files, so a
    different model saved at the same path does not match the old records' resume keys."""
    out: list[list[Any]] = []
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.suffix in (".safetensors", ".json"):
                st = p.stat()
                out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def key_parts(cfg: SampleConfig, extra_key: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings that join every key of a run: what determines the frames (``cfg``) and
    what the run adds (``extra_key``: the caption run's model, questions, generation)."""
    return {**cfg.key_parts(), **(extra_key or {})}


def clip_key(fingerprint: dict[str, Any], clip: ClipSpec, parts: dict[str, Any]) -> str:
    """The resume key of one clip of the input ``fingerprint`` under the settings ``parts``."""
    return stable_digest(
        {"src": fingerprint, "clip": [clip.start_frame, clip.end_frame, clip.label], **parts}
    )


def input_key(
    fingerprint: dict[str, Any], parts: dict[str, Any], *, not_an_input: bool = False
) -> str:
    """The resume key of a record that fails a whole input: it could not be opened or its
    clips planned (``open-error``), or discovery found it cannot be an input at all
    (``not_an_input``: ``input-error``, e.g. a folder with no media)."""
    flag = "input-error" if not_an_input else "open-error"
    return stable_digest({"src": fingerprint, flag: True, **parts})


# -- records -----------------------------------------------------------------------------


def clip_fields(
    info: SourceInfo | None,
    clip: ClipSpec | None = None,
    sel: Selection | None = None,
    batch: FrameBatch | None = None,
) -> dict[str, Any]:
    """What a record says about a clip from what is known of it so far: the source's kind,
    the clip's range, the selection (sampler, indices, timestamps) and the decoded frames'
    views and timestamps."""
    out: dict[str, Any] = {"kind": info.kind if info else None}
    if clip is not None:
        out["clip"] = clip.to_json()
    if sel is not None:
        out["sampler"] = {"name": sel.sampler, "params": dict(sel.params)}
        out["indices"] = list(sel.indices)
        out["selection"] = round_times(dict(sel.extra)) or None
        if info is not None and info.timestamps_s is not None:
            out["timestamps_s"] = timestamps_to_list([info.timestamps_s[i] for i in sel.indices])
    if batch is not None:
        if batch.timestamps_s is not None:
            out["timestamps_s"] = timestamps_to_list(batch.timestamps_s)
        if batch.views is not None:
            out["views"] = [v.to_json() for v in batch.views]
    return out


def ok_record(
    info: SourceInfo,
    clip: ClipSpec,
    sel: Selection,
    batch: FrameBatch | None,
    *,
    key: str,
    timings_s: dict[str, float],
    of_input: str | None = None,
) -> ClipResult:
    """The record of a clip sampled (and, with ``batch``, read) without error. ``of_input``:
    the key a failure of the whole input would have had (:func:`input_key`), kept on the
    record as ``input_key`` so that such a failure written before is replaced by the input's
    clip records (see :mod:`framepipe.output.compact`)."""
    extra: dict[str, Any] = {} if of_input is None else {"input_key": of_input}
    recorded = info.extra.get("record")  # what the source wants on its records (render:
    if isinstance(recorded, dict) and recorded:  # camera placement, up axis, notes)
        extra[info.kind] = dict(recorded)
    fields = clip_fields(info, clip, sel, batch)
    return ClipResult(source=info.id, key=key, timings_s=dict(timings_s), extra=extra, **fields)


def error_text(source: str, error: BaseException | str, doing: str | None = None) -> str:
    """The one-line error of a failed record, naming ``source`` once: ``error`` as one line
    (a string is taken as it is), with ``"<source>: "`` in front unless it names the source
    already; with ``doing``, ``"<source>: <doing> (<error>)"``."""
    if doing is not None:
        detail = error if isinstance(error, str) else one_line_error(error)
        return f"{source}: {doing} ({detail})"
    if isinstance(error, str):
        return error if source in error else f"{source}: {error}"
    return one_line_error(error, source)


def failed_record(
    source: str, error: BaseException | str, *, doing: str | None = None, **fields: Any
) -> ClipResult:
    """A ``failed`` record of ``source``: its error (see :func:`error_text`) and whatever
    ``fields`` were known before the failure (``kind``, ``clip``, ``key``, ``extra``
    such as ``{"stage": "decode"}`` ...)."""
    return ClipResult(
        source=source, status="failed", error=error_text(source, error, doing), **fields
    )


def fail(
    rec: ClipResult,
    error: BaseException | str,
    *,
    doing: str | None = None,
    extra: dict[str, Any] | None = None,
    **fields: Any,
) -> ClipResult:
    """``rec`` failed at a later stage (saving its frames, generating): a ``failed`` record
    that keeps everything ``rec`` knew, with ``fields`` set and ``extra`` added."""
    known = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
    for name in ("source", "status", "error"):
        del known[name]
    known.update(fields, extra={**rec.extra, **(extra or {})})
    return failed_record(rec.source, error, doing=doing, **known)


def derive(
    rec: ClipResult,
    *,
    extra: dict[str, Any] | None = None,
    timings_s: dict[str, float] | None = None,
    **fields: Any,
) -> ClipResult:
    """A copy of ``rec`` with ``fields`` set and ``extra`` and ``timings_s`` added to its own
    (``rec`` itself is not changed)."""
    if extra:
        fields["extra"] = {**rec.extra, **extra}
    if timings_s:
        fields["timings_s"] = {**rec.timings_s, **timings_s}
    return dataclasses.replace(rec, **fields)
