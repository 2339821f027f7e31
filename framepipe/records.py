"""The clip record, made in one place, and the resume key that lets a re-run skip it.

A clip travels the stages as a :class:`ClipJob`: what is known of it so far (the fields of
its record), its frames once they are read, or the error that failed it. The stage that
reads it fills it (:mod:`framepipe.read_clips`), a finishing step may add to it (the paths
of its saved frames) or fail it, and the end of the line builds its record once, with
:meth:`ClipJob.record` (the caption run adds the model's answers there). Records are
:class:`~framepipe.types.ClipResult` objects, frozen once made; the one-line error text of
a failed record, which names the file once, is written only by :func:`error_text`.

Resume keys: :func:`record_key` is a digest of the input's identity
(:func:`source_fingerprint`: absolute path, size, modification time; a remote object's URI,
size and ETag), the clip's range, and the settings that determine its frames and answers
(:func:`key_parts`). A record that fails a whole input before any clip is known has an
input-level key (no clip; its identity the path or URI alone, whatever the file held then),
so that it is retried, and replaced by the input's clip records, on the next run.

The ledger: an input read to its end leaves its :class:`InputPlan` (its plan key, from the
same identity and settings, and its clips' keys); a re-run given the plans of inputs whose
clips are all done (:func:`done_count`) skips them after the metadata check that gives the
identity (a stat, a HEAD), without opening or downloading them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.errors import FramepipeError, one_line_error
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


def record_key(
    fingerprint: dict[str, Any], parts: dict[str, Any], clip: ClipSpec | None = None
) -> str:
    """The resume key of a record of the input ``fingerprint`` under the settings ``parts``:
    of one ``clip``; without one, of a failure of the whole input (it is not an input, or
    could not be opened or its clips planned)."""
    if clip is not None:
        where: dict[str, Any] = {"clip": [clip.start_frame, clip.end_frame, clip.label]}
    else:
        where = {"open-error": True}
    return stable_digest({"src": fingerprint, **where, **parts})


def plan_key(fingerprint: dict[str, Any], parts: dict[str, Any]) -> str:
    """The ledger key of the input ``fingerprint`` under the settings ``parts``: what its
    :class:`InputPlan` is filed under (a changed input, or other settings, plan again)."""
    return stable_digest({"src": fingerprint, "plan": True, **parts})


@dataclass(frozen=True)
class InputPlan:
    """An input whose clips were all planned (and read): what the ledger keeps of it."""

    key: str
    """Its :func:`plan_key`."""
    clips: tuple[str, ...]
    """The resume keys of all its clips."""
    source: str = ""
    """What its records name as their source (for people reading the ledger)."""
    of: str = ""
    """The input's own key under the settings, whatever version of it was read (its clip
    records' ``input_key``): the latest plan of an input supersedes the records of its
    earlier versions (see :mod:`framepipe.output.compact`)."""


def done_count(done: Collection[str], key: str) -> int:
    """How many clips ``key`` stands for in what a run skips (0: not done): ``done`` holds
    clip keys, or maps keys to their clip counts (a finished input's plan key to its clips,
    as a run passes it)."""
    return int(done.get(key, 0)) if isinstance(done, Mapping) else int(key in done)


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


def read_fields(
    info: SourceInfo,
    clip: ClipSpec,
    sel: Selection,
    batch: FrameBatch | None,
    *,
    key: str,
    timings_s: dict[str, float],
    of_input: str | None = None,
) -> dict[str, Any]:
    """The fields of the record of a clip sampled (and, with ``batch``, read) without error.
    ``of_input``: the key a failure of the whole input would have had, kept on the record
    as ``input_key`` so that such a failure written before is replaced by the input's clip
    records (see :mod:`framepipe.output.compact`)."""
    extra: dict[str, Any] = {} if of_input is None else {"input_key": of_input}
    recorded = info.extra.get("record")  # what the source wants on its records (render:
    if isinstance(recorded, dict) and recorded:  # camera placement, up axis, notes)
        extra[info.kind] = dict(recorded)
    fields = clip_fields(info, clip, sel, batch)
    return {**fields, "key": key, "timings_s": dict(timings_s), "extra": extra}


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
    ``fields`` were known before the failure (``kind``, ``clip``, ``key``, ``extra`` ...)."""
    return ClipResult(
        source=source, status="failed", error=error_text(source, error, doing), **fields
    )


def ok_record(source: str, **fields: Any) -> ClipResult:
    """An ``ok`` record of ``source`` with its ``fields`` (see :class:`ClipResult`)."""
    return ClipResult(source=source, **fields)


@dataclass
class ClipJob:
    """One clip on its way through the stages (or a whole input that failed): the fields of
    its record known so far, its frames once read, or the error that failed it. Its record
    is built once, at the end of the line (:meth:`record`)."""

    source: str
    """What the record names as its source (a remote input's URI, else its path)."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The record's fields known so far (``kind``, ``clip``, ``sampler``, ``indices``,
    ``key``, ``timings_s``, ``extra`` ...)."""
    batch: FrameBatch | None = None
    """The decoded frames (None once they are dropped, or when the clip failed)."""
    error: str | None = None
    """The one-line error of a failed clip (None while it is ok)."""
    prepared: Any = None
    """Its frames as the answering backend's prepare step made them where the clip was read
    (the frames themselves are then dropped); None otherwise."""

    @property
    def ok(self) -> bool:
        """Whether the clip is ok and has its frames (the answerer needs them)."""
        return self.error is None and (self.batch is not None or self.prepared is not None)

    def images(self) -> Any:
        """The frames for the answerer: prepared, else as read."""
        if self.prepared is not None:
            return self.prepared
        assert self.batch is not None, "the clip has no frames"
        return self.batch.images()

    @property
    def key(self) -> str | None:
        return self.fields.get("key")

    @property
    def kind(self) -> str | None:
        return self.fields.get("kind")

    @property
    def clip(self) -> dict[str, Any] | None:
        return self.fields.get("clip")

    @property
    def extra(self) -> dict[str, Any]:
        return self.fields.setdefault("extra", {})

    def add(self, **fields: Any) -> None:
        """Add what a stage learnt (e.g. ``frames`` and ``contact_sheet`` once saved)."""
        self.fields.update(fields)

    def fail(
        self,
        error: BaseException | str,
        *,
        doing: str | None = None,
        stage: str | None = None,
    ) -> ClipJob:
        """Fail the clip (its frames are dropped); ``stage`` names where an error that is not
        the input's own (a bug, a crash, a hang, the model) happened. Returns the job."""
        self.error = error_text(self.source, error, doing)
        self.batch = self.prepared = None
        if stage is not None:
            self.fields["extra"] = {**self.extra, "stage": stage}
        return self

    def fail_unexpected(self, error: BaseException, stage: str) -> ClipJob:
        """Fail the clip with ``error``: the input's own problem (a :class:`FramepipeError`)
        as it is, anything else (a bug in a plug-in, a library error) with its ``stage``."""
        return self.fail(error, stage=None if isinstance(error, FramepipeError) else stage)

    def record(
        self,
        *,
        extra: dict[str, Any] | None = None,
        timings_s: dict[str, float] | None = None,
        **fields: Any,
    ) -> ClipResult:
        """The clip's record: what is known, with ``fields`` set and ``extra`` and
        ``timings_s`` added after the clip's own (the caption run's answers, model and
        provenance)."""
        out = {**self.fields, **fields}
        out["extra"] = {**(self.fields.get("extra") or {}), **(extra or {})}
        if timings_s:
            out["timings_s"] = {**(self.fields.get("timings_s") or {}), **timings_s}
        if self.error is not None:
            return failed_record(self.source, self.error, **out)
        return ok_record(self.source, **out)
