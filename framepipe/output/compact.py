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
- a failed record of a whole input also goes when the input was **read to its end** before
  and its records stand: every clip of its latest plan has a surviving record (the input was
  missing for a run, a server answered 404 for a while; a later run that finds it done
  again writes nothing after the failure). Like a clip's ``ok`` record, an input's
  complete records are not replaced by a failure; a run still tries such an input again
  (its plan is skipped only when its identity, a stat or a HEAD, is the plan's);
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

Only fixed-size digests of the keys are held per record (never the records, nor the keys
as text), so memory stays small however long the output is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from hashlib import blake2b
from typing import Any, NamedTuple

import numpy as np

DIGEST = 16
"""Bytes of a key's digest."""


class Meta(NamedTuple):
    """What the rule needs of one record."""

    key: str | None
    ok: bool
    whole_input_failure: bool
    input_key: str | None


class Current(NamedTuple):
    """What an output's ledgers say of its inputs' versions (see
    :func:`framepipe.output.ledger.current_clips`)."""

    inputs: Collection[str] | np.ndarray
    """The inputs (``input_key``) with a plan (or their :func:`digests`)."""
    clips: Collection[str] | np.ndarray
    """The keys of the clips of each such input's latest plan (or their :func:`digests`)."""
    sizes: Mapping[str, int] | np.ndarray | None = None
    """How many clips each input's latest plan has (by input; with digests, in the order of
    ``inputs``); None: not known (no input's records count as complete)."""


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


def digest(key: str) -> bytes:
    """A key's fixed-size digest (16 bytes of BLAKE2b): what is held per record."""
    return blake2b(key.encode("utf-8", "surrogatepass"), digest_size=DIGEST).digest()


def digests(keys: Iterable[str] | np.ndarray) -> np.ndarray:
    """The digests of ``keys``, sorted and unique (digests already: as they are)."""
    if isinstance(keys, np.ndarray):
        return keys
    return np.unique(np.fromiter((digest(k) for k in keys), dtype=f"S{DIGEST}"))


def keep_mask(metas: Iterable[Meta], current: Current | None = None) -> list[bool]:
    """For each record (in write order, read once): whether it survives (see the module's
    rule); ``current``: the inputs with a plan and their latest plans' clips. Held per
    record: its key's and input key's digests and its flags (33 bytes), and the answer."""
    return _survivors(metas, current)[0].tolist()


def _survivors(metas: Iterable[Meta], current: Current | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`keep_mask` as an array, and the digests (sorted) of the inputs of surviving
    clip records that have no plan in ``current`` (a run stopped half-way through them)."""
    keys, ikeys, flags = bytearray(), bytearray(), bytearray()
    none = bytes(DIGEST)
    for m in metas:
        keys += none if m.key is None else digest(m.key)
        ikeys += none if m.input_key is None else digest(m.input_key)
        flags.append(
            (m.key is not None) | m.ok << 1 | m.whole_input_failure << 2
            | (m.input_key is not None) << 3
        )  # fmt: skip
    f = np.frombuffer(flags, np.uint8)
    k, ik = np.frombuffer(keys, f"S{DIGEST}"), np.frombuffer(ikeys, f"S{DIGEST}")
    has_key, ok, whole, has_ik = (f & 1) > 0, (f & 2) > 0, (f & 4) > 0, (f & 8) > 0
    keep = ~has_key  # records without a key are all kept
    # of each key, its latest ok record, else its latest
    at = np.flatnonzero(has_key)
    at = at[np.lexsort((at, ok[at], k[at]))]  # by key, failed before ok, then in order
    keep[at[_last_of_runs(k[at])]] = True
    # a whole input's failure goes once a clip record of that input came after it
    failures = np.flatnonzero(has_key & whole)
    if len(failures) and has_ik.any():
        clips = np.flatnonzero(has_ik)
        clips = clips[np.lexsort((clips, ik[clips]))]
        last = clips[_last_of_runs(ik[clips])]  # each input's latest clip record
        found, pos = _find(k[failures], ik[last])
        keep[failures[found & (last[pos] > failures)]] = False
    planned = np.zeros(len(f), bool)
    if current is not None:  # another version's clips
        planned = _find(ik, digests(current.inputs))[0]
        other = has_key & has_ik & planned
        other[other] = ~_find(k[other], digests(current.clips))[0]
        keep &= ~other
        if len(failures) and current.sizes is not None:  # and a read input's failure
            complete = _complete_inputs(ik[keep & has_key & has_ik & planned], current)
            keep[failures[_find(k[failures], complete)[0]]] = False
    return keep, np.unique(ik[keep & has_key & has_ik & ~planned])


def _complete_inputs(clip_inputs: np.ndarray, current: Current) -> np.ndarray:
    """The inputs (digests, sorted) whose latest plan's clips all have a surviving record,
    of ``clip_inputs``: the input digest of each surviving clip record of a latest plan
    (one per clip key)."""
    inputs, sizes = _sizes(current)
    if not len(inputs):
        return inputs
    seen, count = np.unique(clip_inputs, return_counts=True)
    found, pos = _find(seen, inputs)
    return seen[found & (count >= sizes[pos])]


def _sizes(current: Current) -> tuple[np.ndarray, np.ndarray]:
    """``current``'s inputs (digests, sorted) and the clip count of each one's latest plan."""
    if isinstance(current.sizes, np.ndarray):
        return digests(current.inputs), current.sizes
    sizes = current.sizes or {}
    d = np.array([digest(k) for k in sizes], f"S{DIGEST}")
    order = np.argsort(d)
    return d[order], np.array(list(sizes.values()), np.int64)[order]


def holds(sorted_digests: np.ndarray, key: str) -> bool:
    """Whether the :func:`digests` ``sorted_digests`` hold ``key``'s."""
    return bool(_find(np.array([digest(key)], f"S{DIGEST}"), sorted_digests)[0][0])


def _find(values: np.ndarray, sorted_unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each of ``values`` is in ``sorted_unique``, and where (lighter than
    :func:`numpy.isin`, which sorts copies of both)."""
    if not len(sorted_unique):
        return np.zeros(len(values), bool), np.zeros(len(values), np.intp)
    pos = np.minimum(np.searchsorted(sorted_unique, values), len(sorted_unique) - 1)
    return sorted_unique[pos] == values, pos


def _last_of_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values in ``sorted_keys`` ends (a boolean mask)."""
    return np.append(sorted_keys[1:] != sorted_keys[:-1], True)[: len(sorted_keys)]


def kept_keys(
    metas: Iterable[Meta], current: Current | None = None, *, retry_failed: bool = True
) -> tuple[set[str], set[str], bool, np.ndarray]:
    """The keys of the surviving records (``metas`` read once): those a re-run skips (of
    ``ok`` records; with ``retry_failed=False`` of every record) and the others (failed
    records, retried); whether every record survives; and the digests of the inputs of
    surviving clip records without a plan in ``current`` (a plan of one, written later,
    may supersede them: see :func:`holds`)."""
    winner: dict[str, int] = {}  # each key's candidate survivor: i if ok, else ~i

    def seen() -> Iterator[Meta]:
        for i, m in enumerate(metas):
            if m.key is not None:
                before = winner.get(m.key, -1)
                if m.ok or before < 0:
                    winner[m.key] = i if m.ok else ~i
            yield m

    keep, unplanned = _survivors(seen(), current)
    done: set[str] = set()
    others: set[str] = set()
    for key, i in winner.items():
        if keep[i if i >= 0 else ~i]:
            (done if i >= 0 or not retry_failed else others).add(key)
    return done, others, bool(keep.all()), unplanned


def done_keys(
    metas: Iterable[Meta], *, retry_failed: bool = True, current: Current | None = None
) -> set[str]:
    """The keys a re-run skips: those of surviving ``ok`` records (with ``retry_failed=False``
    those of every surviving record, failed ones too); see :func:`kept_keys`."""
    return kept_keys(metas, current, retry_failed=retry_failed)[0]
