"""``--shard I/N``: split a run into N independent parts, for array jobs (Slurm and the like)
on clusters without a cluster engine.

Shard ``I`` (0-based) of ``N`` takes the inputs whose identity hashes to ``I`` modulo ``N``:
the identity is where the input is, its URI or the real path of its file (however it was
named: relative or absolute, through a link, inside a folder given or listed, see
:func:`framepipe.inputs.unique.place`), with its clip range when a manifest row has one,
hashed with a stable digest, so the split is the same on every machine and in every run,
and independent of the order of the inputs and of how they were listed. Shards are taken
after the inputs are found and de-duplicated: the files of a folder are split among the
shards one by one, and a file named twice (a folder and the file in it) is in one shard
only. Every clip of an input belongs to the same shard, so the N outputs together hold
exactly the records of one run (``framepipe merge``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from framepipe.discovery import Input
from framepipe.errors import ConfigError
from framepipe.inputs.unique import place
from framepipe.utils import stable_digest


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--shard: the number of shards ({self.count}) must be >= 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"--shard: index {self.index} is not in 0..{self.count - 1} (shards count from 0)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def takes(self, item: Input) -> bool:
        """Whether ``item`` belongs to this shard."""
        return shard_of(item, self.count) == self.index

    def takes_place(self, where: str, start_s: float | None, end_s: float | None) -> bool:
        """Whether the input at ``where`` (a URI, or a real path) with this clip range
        belongs to this shard (known before the input is made)."""
        return shard_by_identity([where, start_s, end_s], self.count) == self.index


def parse_shard(text: str | Shard | tuple[int, int] | None) -> Shard | None:
    """``"I/N"`` (or a Shard, or ``(I, N)``) -> :class:`Shard`; a one-line ConfigError for
    anything else."""
    if text is None or isinstance(text, Shard):
        return text
    if isinstance(text, tuple):
        return Shard(int(text[0]), int(text[1]))
    i, sep, n = str(text).strip().partition("/")
    try:
        if not sep:
            raise ValueError
        index, count = int(i), int(n)
    except ValueError:
        raise ConfigError(
            f"--shard {text!r}: expected I/N, e.g. 0/4 (shards count from 0)"
        ) from None
    return Shard(index, count)


def identity(item: Input) -> list[object]:
    """What decides an input's shard: where it is (its URI, or its file's real path), and
    its clip range."""
    return [place(item), item.start_s, item.end_s]


def shard_of(item: Input, count: int) -> int:
    """The shard (0..count-1) that ``item`` belongs to."""
    return shard_by_identity(identity(item), count)


def shard_by_identity(ident: list[object], count: int) -> int:
    """The shard (0..count-1) of an identity (see :func:`identity`)."""
    return int(stable_digest(ident, 16), 16) % count


def take_shard(inputs: Iterable[Input], shard: Shard | None) -> Iterator[Input]:
    """The inputs of ``shard`` (all of them without one), lazily, in their order."""
    for item in inputs:
        if shard is None or shard.takes(item):
            yield item
