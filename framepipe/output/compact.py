"""Which records of an output survive: exactly one record per clip.

An output is a log of records in write order (one file's lines in order; several files in
the order of their modification times, see :func:`framepipe.output.store.record_files`).
The rule, the same for compaction at the end of a run, for ``merge`` and for the resume's
done keys:

- the **latest record of a key wins** (a retried clip's new record replaces the old one),
  except that a failed record never replaces an ``ok`` one: good records are never lost
  (an ``ok`` key is done, so a run does not write it again; two outputs merged may hold
  both);
- a failed record of a **whole input** (``clip`` is null: it could not be opened or its
  clips planned) is dropped once a clip record of the same input under the same settings
  was written after it: clip records carry the key such a failure would have had, as
  ``input_key`` (see :func:`framepipe.records.read_fields`);
- the records of an input's **earlier versions** go once a later version of it was read to
  its end (a file changed in place, an object replaced): ``current`` holds the inputs
  (their ``input_key``) with a plan in the output's ledger and the clip keys of each one's
  latest plan (see :func:`framepipe.output.ledger.current_clips`; a key names its input's
  version, so one set serves them all); a clip record of such an input whose key is not
  among them was made from another version. Until the new version's plan is there (a
  run on it stopped half-way) the earlier version's plan is the latest: its records stay
  and the new version's few go (the next run does that input again), so an output never
  holds two versions of a clip;
- records without a key are all kept.

Only digests are held per record (never the records), so memory stays small however long
the output is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class Meta(NamedTuple):
    """What the rule needs of one record."""

    key: str | None
    ok: bool
    whole_input_failure: bool
    input_key: str | None


class Current(NamedTuple):
    """What an output's ledgers say of its inputs' versions (see
    :func:`framepipe.output.ledger.current_clips`)."""

    inputs: frozenset[str]
    """The inputs (``input_key``) with a plan."""
    clips: frozenset[str]
    """The keys of the clips of each such input's latest plan."""


def record_meta(rec: Mapping[str, Any]) -> Meta:
    """The :class:`Meta` of a record dict (as written)."""
    key = rec.get("key")
    ok = rec.get("status", "ok") == "ok"
    clip = rec.get("clip")
    ikey = rec.get("input_key") if clip is not None else None
    return Meta(
        None if key is None else str(key),
        ok,
        clip is None and not ok,
        None if ikey is None else str(ikey),
    )


def keep_mask(metas: Iterable[Meta], current: Current | None = None) -> list[bool]:
    """For each record (in write order): whether it survives (see the module's rule);
    ``current``: the inputs with a plan and their latest plans' clips."""
    metas = list(metas)
    current = current or Current(frozenset(), frozenset())
    last: dict[str, int] = {}
    last_ok: dict[str, int] = {}
    input_last: dict[str, int] = {}
    for i, m in enumerate(metas):
        if m.key is not None:
            last[m.key] = i
            if m.ok:
                last_ok[m.key] = i
        if m.input_key is not None:
            input_last[m.input_key] = i
    out = []
    for i, m in enumerate(metas):
        if m.key is None:
            out.append(True)
            continue
        superseded = m.whole_input_failure and input_last.get(m.key, -1) > i
        if m.input_key is not None and m.input_key in current.inputs:
            superseded = superseded or m.key not in current.clips  # another version's
        out.append(last_ok.get(m.key, last[m.key]) == i and not superseded)
    return out


def done_keys(
    metas: Iterable[Meta], *, retry_failed: bool = True, keep: list[bool] | None = None
) -> set[str]:
    """The keys a re-run skips: those of surviving ``ok`` records (with ``retry_failed=False``
    those of every surviving record, failed ones too). ``keep``: the metas'
    :func:`keep_mask`, when known."""
    metas = list(metas)
    mask = keep_mask(metas) if keep is None else keep
    return {
        m.key
        for m, kept in zip(metas, mask)
        if kept and m.key is not None and (m.ok or not retry_failed)
    }
