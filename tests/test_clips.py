from fractions import Fraction

import pytest

from framepipe.clips import plan_clips, window_clips
from framepipe.errors import ConfigError
from framepipe.types import SourceInfo


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
