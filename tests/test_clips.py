import itertools
from fractions import Fraction

import pytest

from framepipe.clips import check_clips, plan_clips, register_clip_planner, window_clips
from framepipe.errors import ConfigError, FramepipeError
from framepipe.types import ClipSpec, SourceInfo


def info(n: int, fps: int = 10) -> SourceInfo:
    ts = tuple(i / fps for i in range(n))
    return SourceInfo(
        id="v",
        kind="video",
        num_frames=n,
        width=8,
        height=8,
        fps=Fraction(fps),
        timestamps_s=ts,
        duration_s=n / fps,
    )


def test_whole_clip_by_default() -> None:
    (clip,) = plan_clips(info(50))
    assert (clip.start_frame, clip.end_frame, clip.start_s, clip.end_s) == (0, 50, 0.0, 5.0)


def test_windows_back_to_back_cover_everything() -> None:
    clips = plan_clips(info(100), clip_seconds=2.0)
    assert [(c.start_frame, c.end_frame) for c in clips] == [
        (0, 20),
        (20, 40),
        (40, 60),
        (60, 80),
        (80, 100),
    ]
    assert [c.index for c in clips] == list(range(5))
    assert all(c.label == "window" for c in clips)


def test_short_tail_is_merged() -> None:
    clips = window_clips(info(105), 2.0)  # 10.5 s: the last 0.5 s joins the last window
    assert clips[-1].end_frame == 105 and len(clips) == 5


def test_stride_overlapping_windows() -> None:
    clips = window_clips(info(60), 2.0, 1.0)
    assert [(c.start_frame, c.end_frame) for c in clips][:3] == [(0, 20), (10, 30), (20, 40)]
    assert clips[-1].end_frame == 60


def test_overlapping_windows_end_once_at_the_end_despite_rounding() -> None:
    # 5.0 + 0.3 + 0.3 + 0.3 + 0.3 is 6.199999..., whose window ended just short of 7.0 and
    # was followed by a window inside it (6.5..7.0)
    ts = tuple(5.0 + i / 25 for i in range(50))
    video = SourceInfo(
        id="v", kind="video", num_frames=50, width=8, height=8, timestamps_s=ts, duration_s=2.0
    )
    clips = window_clips(video, 0.8, 0.3)
    assert [(c.start_frame, c.end_frame) for c in clips] == [
        (0, 20),
        (8, 28),
        (15, 35),
        (23, 43),
        (30, 50),
    ]
    assert [round(c.start_s or 0, 6) for c in clips] == [5.0, 5.3, 5.6, 5.9, 6.2]
    assert len(window_clips(video, 0.7, 0.1)) == 14  # starts 5.0 .. 6.3, the last ends at 7.0


def test_bad_window_options() -> None:
    with pytest.raises(ConfigError, match="clip-seconds"):
        window_clips(info(10), 0)
    with pytest.raises(ConfigError, match="stride"):
        window_clips(info(10), 1.0, -1)


def _halves(src: SourceInfo, *, source: object = None, parts: int = 2) -> list[ClipSpec]:
    edges = [k * src.num_frames // parts for k in range(parts + 1)]
    return [ClipSpec(src.id, a, b, k) for k, (a, b) in enumerate(itertools.pairwise(edges))]


def test_a_planner_without_check_refuses_an_option_it_does_not_take_before_any_input() -> None:
    """``--clips halves --clip-opt prts=4`` was accepted, then failed every input with
    ``TypeError: halves() got an unexpected keyword argument 'prts'`` (exit status 1)."""
    register_clip_planner("test_halves_opts")(_halves)
    check_clips("test_halves_opts", parts=3)
    with pytest.raises(
        ConfigError,
        match=r"^unknown parameter\(s\) prts for --clips test_halves_opts \(its options: parts\)"
        r"\. Did you mean 'parts'\?$",
    ):
        check_clips("test_halves_opts", prts=3)
    register_clip_planner("test_open_planner")(lambda src, *, source=None, **params: [])
    check_clips("test_open_planner", anything=1)  # it takes **params: its own business


def test_a_planner_that_raises_or_returns_wrong_clips_fails_in_one_line_naming_it() -> None:
    """A planner's own error did not name it (``ValueError: planner exploded``), clips past
    the end of the source were planned, and so was one clip twice."""

    def exploding(src: SourceInfo, *, source: object = None, how: str = "") -> object:
        if how == "raise":
            raise ValueError("planner exploded")
        if how == "twice":  # one clip's key: "2 clip(s) written", one record in the file
            return [ClipSpec(src.id, 0, 5, 0, label="x"), ClipSpec(src.id, 0, 5, 1, label="x")]
        return None if how == "none" else [ClipSpec(src.id, 0, src.num_frames + 5)]

    register_clip_planner("test_wrong_planner")(exploding)
    v = info(10)
    with pytest.raises(
        FramepipeError,
        match=r"^clip planner 'test_wrong_planner' failed: ValueError: planner exploded$",
    ):
        plan_clips(v, mode="test_wrong_planner", how="raise")
    for how, shown in (("none", "None"), ("past", "ClipSpec")):
        with pytest.raises(
            FramepipeError,
            match=rf"^clip planner 'test_wrong_planner' returned {shown}.*, not a list of clips "
            r"within frames 0..10$",
        ):
            plan_clips(v, mode="test_wrong_planner", how=how)
    with pytest.raises(
        FramepipeError,
        match=r"^clip planner 'test_wrong_planner' planned frames 0..5 \('x'\) twice$",
    ):
        plan_clips(v, mode="test_wrong_planner", how="twice")
