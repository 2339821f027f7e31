from fractions import Fraction

import pytest

from framepipe.errors import ConfigError, SamplingError
from framepipe.samplers import available_samplers, get_sampler, register_sampler, uniform
from framepipe.samplers.uniform import uniform_indices
from framepipe.types import ClipSpec, Selection, SourceInfo


def video_info(n: int, fps: float = 30.0, ts: list[float] | None = None) -> SourceInfo:
    ts = ts if ts is not None else [i / fps for i in range(n)]
    return SourceInfo(
        id="v.mp4",
        kind="video",
        num_frames=n,
        width=64,
        height=48,
        fps=Fraction(fps).limit_denominator(1000),
        timestamps_s=tuple(ts),
        duration_s=ts[-1] - ts[0] + 1 / fps,
    )


def whole(info: SourceInfo) -> ClipSpec:
    return ClipSpec(info.id, 0, info.num_frames, end_s=info.end_s)


def test_centers_are_segment_centres() -> None:
    assert uniform_indices(0, 100, 4) == [12, 37, 62, 87]
    assert uniform_indices(0, 10, 5) == [1, 3, 5, 7, 9]
    assert uniform_indices(10, 20, 1) == [15]


def test_endpoints_include_both_ends() -> None:
    assert uniform_indices(0, 100, 5, mode="endpoints") == [0, 25, 50, 74, 99]
    assert uniform_indices(5, 9, 2, mode="endpoints") == [5, 8]


@pytest.mark.parametrize("length", [1, 2, 7, 33, 1000])
@pytest.mark.parametrize("n", [1, 3, 8, 16])
def test_indices_in_range_sorted_and_distinct(length: int, n: int) -> None:
    for mode in ("centers", "endpoints"):
        idx = uniform_indices(3, 3 + length, n, mode=mode)  # type: ignore[arg-type]
        assert len(idx) == min(n, length)
        assert idx == sorted(set(idx))
        assert all(3 <= i < 3 + length for i in idx)


def test_overflow_policies() -> None:
    info = video_info(3)
    sel = uniform(info, whole(info), n=5)
    assert sel.indices == (0, 1, 2, 2, 2)
    assert uniform(info, whole(info), n=5, overflow="all").indices == (0, 1, 2)
    with pytest.raises(SamplingError, match="fewer than n=5"):
        uniform(info, whole(info), n=5, overflow="error")


def test_n_must_be_positive() -> None:
    info = video_info(10)
    with pytest.raises(SamplingError, match=r"n \(0\) must be >= 1"):
        uniform(info, whole(info), n=0)


def vfr_info(ts: list[float], duration_s: float) -> SourceInfo:
    """A variable-frame-rate video's info: its frames at ``ts``."""
    n = len(ts)
    return SourceInfo(
        id="vfr", kind="video", num_frames=n, width=8, height=8, timestamps_s=tuple(ts),
        duration_s=duration_s,
    )  # fmt: skip


def test_rate_sampling_uses_timestamps_and_caps_at_n() -> None:
    # variable frame rate: first second at 10 fps, then 2 fps
    info = vfr_info([i / 10 for i in range(10)] + [1.0 + i / 2 for i in range(4)], 3.0)
    sel = uniform(info, whole(info), n=100, fps=1.0)
    # one frame per second: t=0 -> frame 0, t=1 -> frame 10, t=2 -> frame 12
    assert sel.indices == (0, 10, 12)
    capped = uniform(info, whole(info), n=2, fps=10.0)
    assert len(capped.indices) == 2


def test_rate_sampling_caps_the_frames_not_the_rate_times() -> None:
    # variable frame rate: 10 fps for 1 s, then 2 fps for 5 s, then 20 fps for 0.5 s
    ts = [i / 10 for i in range(10)] + [1.0 + i / 2 for i in range(10)]
    ts += [6.0 + i / 20 for i in range(10)]
    info = vfr_info(ts, 6.55)
    # 20 fps shows every one of the 30 frames: n=40 caps nothing, as n=200 does
    everything = uniform(info, whole(info), n=200, fps=20.0).indices
    assert everything == tuple(range(30))
    assert uniform(info, whole(info), n=40, fps=20.0).indices == everything
    # fewer frames than the rate shows: exactly n of them, spread over the whole clip
    for n in (5, 10, 20, 29):
        idx = uniform(info, whole(info), n=n, fps=20.0).indices
        assert len(set(idx)) == n == len(idx) and list(idx) == sorted(idx)
    ten = uniform(info, whole(info), n=10, fps=20.0).indices
    assert ten[0] < 10 and 10 <= ten[4] < 20 and ten[-1] >= 20  # every part of the clip


def test_rate_sampling_below_the_frame_rate_keeps_the_rate_times() -> None:
    info = video_info(300, fps=30.0)  # 10 s
    assert uniform(info, whole(info), n=100, fps=1.0).indices == tuple(range(0, 300, 30))
    # capped: n of the 10 rate times, evenly
    assert uniform(info, whole(info), n=4, fps=1.0).indices == (30, 90, 180, 240)


def test_deterministic() -> None:
    info = video_info(1234)
    a = uniform(info, whole(info), n=16)
    b = uniform(info, whole(info), n=16)
    assert a == b


def test_registry_and_user_sampler() -> None:
    assert "uniform" in available_samplers()
    name, fn = get_sampler("uniform")
    assert name == "uniform" and fn is uniform

    @register_sampler("every_other_test")
    def every_other(
        info: SourceInfo, clip: ClipSpec, *, n: int, source: object = None, **params: object
    ) -> Selection:
        return Selection(tuple(range(clip.start_frame, clip.end_frame, 2))[:n], "every_other")

    assert get_sampler("every_other_test")[1] is every_other
    assert get_sampler("framepipe.samplers.uniform:uniform_indices")[1] is uniform_indices
    with pytest.raises(ConfigError, match="unknown sampler"):
        get_sampler("nope")


def test_unknown_option_is_a_one_line_error() -> None:
    info = video_info(30)
    with pytest.raises(ConfigError) as exc:
        uniform(info, whole(info), n=3, mdoe="endpoints")
    msg = str(exc.value)
    assert msg == (
        "unknown parameter 'mdoe' for sampler 'uniform' (options: mode, fps, overflow). "
        "Did you mean 'mode'?"
    )
    with pytest.raises(ConfigError, match=r"^unknown parameters 'a', 'b' for sampler 'uniform'"):
        uniform(info, whole(info), n=3, b=1, a=2)
    sel = uniform(info, whole(info), n=3, mode="endpoints", overflow="all")  # known: fine
    assert sel.params == {"n": 3, "mode": "endpoints", "overflow": "all"}


def test_a_user_sampler_returning_float_indices_fails_its_clip_naming_the_sampler() -> None:
    """A plug-in returning ``np.linspace`` without rounding had its frames cut down to the
    ones below (1.5 -> 1) without a word; integers of numpy's types are frame numbers."""
    import numpy as np

    from framepipe.config import SampleConfig
    from framepipe.errors import FramepipeError
    from framepipe.read_clips import select

    @register_sampler("linspace_test")
    def spread(
        info: SourceInfo, clip: ClipSpec, *, n: int, source: object = None, **params: object
    ) -> object:
        idx = np.linspace(clip.start_frame, clip.end_frame - 1, n)
        return idx if params.get("raw") else idx.round().astype(np.int64)

    info = video_info(10)
    sel = select(None, info, whole(info), SampleConfig(n=3, sampler="linspace_test"))  # type: ignore[arg-type]
    assert sel.indices == (0, 4, 9) and all(type(i) is int for i in sel.indices)
    cfg = SampleConfig(n=3, sampler="linspace_test", sampler_params={"raw": True})
    with pytest.raises(
        FramepipeError,
        match=r"^sampler 'linspace_test': frame indices must be integers, got 0.0 \(float64\)",
    ):
        select(None, info, whole(info), cfg)  # type: ignore[arg-type]
