"""A user's own source kind (a plug-in) that reads other frames than those asked for fails
its clip in one line naming the kind; the run goes on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from framepipe import SampleConfig, sample
from framepipe.sources.base import SOURCES, Source, register_source
from framepipe.types import FrameBatch, SourceInfo


class MisreadSource(Source):
    """``*.misread`` files of 20 frames; the file's text says what its read gets wrong.
    Registered by the test that uses it only (a kind left registered would be imported by
    every later run's decoders and Ray workers, where this module is not importable)."""

    kind: ClassVar[str] = "test_misread"
    extensions: ClassVar[frozenset[str]] = frozenset({".misread"})

    def info(self) -> SourceInfo:
        return SourceInfo(id=str(self.path), kind=self.kind, num_frames=20, width=8, height=8)

    def read(self, indices: Sequence[int]) -> FrameBatch:
        how = self.path.read_text().strip()
        got = [int(i) + (how == "shifted") for i in indices][: len(indices) - (how == "short")]
        return FrameBatch([np.full((8, 8, 3), i, np.uint8) for i in got], tuple(got))


def test_a_source_reading_other_frames_than_asked_fails_its_clip_naming_the_kind(
    tmp_path: Path,
) -> None:
    """A batch one frame short, or of the next frames, was written as an ok record whose
    ``indices`` said frames it did not hold."""
    for how in ("shifted", "short", "right"):
        (tmp_path / f"{how}.misread").write_text(how)
    register_source(MisreadSource)
    try:
        sample(tmp_path, tmp_path / "out", SampleConfig(n=3), workers=0)
    finally:
        SOURCES._items.pop(MisreadSource.kind, None)
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    recs = {Path(r["source"]).stem: r for r in map(json.loads, lines)}
    assert recs["right"]["status"] == "ok" and recs["right"]["indices"] == [3, 10, 16]
    asked = "when asked for [3, 10, 16]"
    assert recs["shifted"]["error"].endswith(
        f"shifted.misread: source kind 'test_misread' read frames [4, 11, 17] {asked}"
    )
    assert recs["short"]["error"].endswith(
        f"short.misread: source kind 'test_misread' read frames [3, 10] {asked}"
    )
    assert recs["shifted"]["status"] == recs["short"]["status"] == "failed"
