"""A user's own sampler (a plug-in) that gets its answer wrong fails its clip in one line
naming the sampler and the problem; the run goes on with the other clips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from media import h264_mp4

from framepipe.config import SampleConfig
from framepipe.errors import FramepipeError
from framepipe.read_clips import select
from framepipe.samplers import register_sampler
from framepipe.samplers.base import SAMPLERS
from framepipe.types import ClipSpec, SourceInfo


def wrong(info: SourceInfo, clip: ClipSpec, *, n: int, source: object = None, how: str = "") -> Any:
    """Returns what ``how`` names: each a mistake a plug-in can make."""
    if how == "raise":
        raise RuntimeError("plugin blew up")
    return {
        "none": None,
        "empty": [],
        "count": list(range(clip.start_frame, clip.start_frame + n + 2)),
        "next_clip": [clip.end_frame],
        "before_clip": [clip.start_frame - 1],
    }[how]


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """``wrong_test`` registered for this module's tests only: a sampler left registered
    would be imported by every later run's decoders and Ray workers, where this module is
    not importable."""
    register_sampler("wrong_test")(wrong)
    yield
    for name in ("wrong_test", "raise_on_b_test"):
        SAMPLERS._items.pop(name, None)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("raise", r"sampler 'wrong_test' failed: RuntimeError: plugin blew up"),
        ("none", r"sampler 'wrong_test' returned NoneType, not a Selection or a list of frame"),
        ("empty", r"sampler 'wrong_test' returned no frame index"),
        ("count", r"sampler 'wrong_test' returned 5 indices for n=3"),
        ("next_clip", r"sampler 'wrong_test' returned indices outside 10..19: \[20\]"),
        ("before_clip", r"sampler 'wrong_test' returned indices outside 10..19: \[9\]"),
    ],
)
def test_a_user_sampler_that_raises_or_returns_wrong_indices_fails_naming_sampler_and_problem(
    how: str, message: str
) -> None:
    """A sampler's own error did not name it (``RuntimeError: plugin blew up``, stage
    ``decode``), ``None`` was "'NoneType' object is not iterable", and more than n indices
    or indices of the next window were written as an ok record."""
    info = SourceInfo(id="v.mp4", kind="video", num_frames=30, width=64, height=48)
    clip = ClipSpec(info.id, 10, 20, 1)
    cfg = SampleConfig(n=3, sampler="wrong_test", sampler_params={"how": how})
    with pytest.raises(FramepipeError, match="^" + message):
        select(None, info, clip, cfg)  # type: ignore[arg-type]


def test_a_raising_user_sampler_is_one_failed_record_per_clip_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    from framepipe import sample

    @register_sampler("raise_on_b_test")
    def raise_on_b(info: SourceInfo, clip: ClipSpec, *, n: int, source: object = None) -> list[int]:
        if info.id.endswith("b.mp4"):
            raise KeyError("no such thing")
        return [clip.start_frame]

    a, b = h264_mp4(tmp_path / "a.mp4", 10), h264_mp4(tmp_path / "b.mp4", 10)
    sample([a, b], tmp_path / "out", SampleConfig(n=1, sampler=raise_on_b), workers=0)
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    recs = {Path(r["source"]).name: r for r in map(json.loads, lines)}
    assert recs["a.mp4"]["status"] == "ok" and recs["a.mp4"]["indices"] == [0]
    assert recs["b.mp4"]["status"] == "failed"
    assert recs["b.mp4"]["error"] == (
        f"{b}: sampler 'raise_on_b' failed: KeyError: 'no such thing'"
    )


def test_an_option_given_to_a_sampler_that_takes_none_says_it_takes_none() -> None:
    """The refusal ended with an empty list: ``(options: )``."""
    from framepipe.errors import ConfigError
    from framepipe.samplers.base import check_sampler

    def plain(info: SourceInfo, clip: ClipSpec, *, n: int, source: object = None) -> list[int]:
        return [clip.start_frame]

    with pytest.raises(
        ConfigError, match=r"^unknown parameter 'overflow' for sampler 'plain' \(options: none\)$"
    ):
        check_sampler(plain, 3, {"overflow": "all"})
