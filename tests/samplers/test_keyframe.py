"""The shot detector and the keyframe / iframe samplers, on generated videos with known
cuts, a fade through black, a dissolve, a flash frame and a fast pan."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from shot_media import ShotSpec, _frame, make_edit_video, standard_script, texture, write_video

from framepipe.clips import shot_ranges
from framepipe.errors import ConfigError, DecodeError, FramepipeError, SamplingError
from framepipe.samplers.base import get_sampler
from framepipe.samplers.iframe import nearest_distinct
from framepipe.samplers.keyframe import allocate
from framepipe.shots import DetectorParams, detect_shots
from framepipe.sources.base import Source, open_source, rgb_to_yuv
from framepipe.types import ClipSpec, FrameBatch, Selection, SmallFrames, SourceInfo


@pytest.fixture(scope="session")
def edit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("shots") / "edit.mp4"
    truth = make_edit_video(path, standard_script())
    return path, truth


def _whole(path: Path, n: int, sampler: str = "keyframe", **params: object) -> object:
    with open_source(path) as src:
        info = src.info()
        _, fn = get_sampler(sampler)
        return fn(info, ClipSpec(info.id, 0, info.num_frames), n=n, source=src, **params)


def test_cuts_found_within_one_frame(edit: tuple[Path, object]) -> None:
    path, truth = edit
    with open_source(path) as src:
        det = detect_shots(src)
    cuts = [t.frame for t in det.transitions if t.kind == "cut"]
    for c in truth.cuts:  # type: ignore[attr-defined]
        near = [f for f in cuts if abs(f - c) <= 1]
        assert len(near) == 1, (c, cuts)
    # the flash frame and the fast pan are not cuts; each gradual transition is one boundary
    assert len(det.transitions) == len(truth.cuts) + len(truth.gradual), det.transitions  # type: ignore[attr-defined]


def test_fade_and_dissolve_reported_once(edit: tuple[Path, object]) -> None:
    path, truth = edit
    with open_source(path) as src:
        det = detect_shots(src)
    for first, last, kind in truth.gradual:  # type: ignore[attr-defined]
        inside = [t for t in det.transitions if first - 2 <= t.frame <= last + 2]
        assert len(inside) == 1, (kind, first, last, det.transitions)
        assert inside[0].kind == kind


def test_shots_tile_the_video(edit: tuple[Path, object]) -> None:
    path, truth = edit
    with open_source(path) as src:
        det = detect_shots(src)
    shots = det.shots
    assert shots[0][0] == 0 and shots[-1][1] == truth.num_frames  # type: ignore[attr-defined]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shots))


def test_every_shot_covered_when_n_allows(edit: tuple[Path, object]) -> None:
    path, truth = edit
    for n in (len(truth.shots), len(truth.shots) + 5):  # type: ignore[attr-defined]
        sel = _whole(path, n)
        assert len(sel.indices) == n and len(set(sel.indices)) == n
        assert list(sel.indices) == sorted(sel.indices)
        for a, b in truth.shots:  # type: ignore[attr-defined]
            assert any(a <= i < b for i in sel.indices), (a, b, sel.indices)
        # never a frame inside a fade or a dissolve
        for first, last, _ in truth.gradual:  # type: ignore[attr-defined]
            assert not any(first <= i <= last for i in sel.indices), sel.indices
        extra = sel.extra
        assert len(extra["frame_shots"]) == n
        assert next(s["start_frame"] for s in extra["shots"]) == 0


def test_fewer_frames_than_shots_take_the_longest(edit: tuple[Path, object]) -> None:
    path, _truth = edit
    sel = _whole(path, 3)
    shots = [(s["start_frame"], s["end_frame"]) for s in sel.extra["shots"]]
    lengths = sorted((b - a for a, b in shots), reverse=True)
    got = sorted((shots[k][1] - shots[k][0] for k in sel.extra["frame_shots"]), reverse=True)
    assert got == lengths[:3]


def test_deterministic(edit: tuple[Path, object]) -> None:
    path, _ = edit
    a = _whole(path, 9)
    b = _whole(path, 9)
    assert a.indices == b.indices and a.extra == b.extra


def test_allocate_proportional() -> None:
    assert allocate([100, 10, 10], 2) == [1, 1, 0]
    assert allocate([100, 10, 10], 7) == [5, 1, 1]
    assert allocate([3, 1], 10) == [3, 1]  # never more frames than a shot has
    assert sum(allocate([50, 40, 30, 20], 13)) == 13


def test_iframe_sampler_uses_keyframes(tmp_path: Path) -> None:
    path = tmp_path / "gop.mp4"
    make_edit_video(path, [ShotSpec(11, 150)], gop=10)
    with open_source(path) as src:
        keys = set(src.info().keyframe_indices or ())
    sel = _whole(path, 5, "iframe")
    assert len(set(sel.indices)) == 5 and set(sel.indices) <= keys
    assert sel.extra["non_keyframes"] == 0
    # fewer keyframes than n: all of them, completed with other frames
    sel = _whole(path, 40, "iframe")
    assert keys <= set(sel.indices) and len(set(sel.indices)) == 40


def test_nearest_distinct() -> None:
    assert nearest_distinct([10, 11, 12], [0, 10, 30, 50]) == [0, 10, 30]
    assert nearest_distinct([4, 45], [0, 10, 30, 50]) == [0, 50]


def test_shot_ranges_merge_and_split() -> None:
    ts = np.arange(1000) / 25.0
    shots = [(0, 20), (20, 300), (300, 310), (310, 1000)]
    merged = shot_ranges(shots, ts, 40.0, min_shot_s=2.0, max_shot_s=None)
    # the 10-frame shot joins its shorter neighbour, then the 20-frame one joins that
    assert merged == [(0, 310), (310, 1000)]
    split = shot_ranges(shots, ts, 40.0, min_shot_s=2.0, max_shot_s=10.0)
    assert split[0][0] == 0 and all(b - a <= 250 for a, b in split)
    assert len(split) == 2 + 3  # 12.4 s in two parts, 27.6 s in three
    assert split[-1][1] == 1000 and all(a[1] == b[0] for a, b in itertools.pairwise(split))


# -- bad input -------------------------------------------------------------------------------


def test_one_shot_static_video(tmp_path: Path) -> None:
    path = tmp_path / "static.mp4"
    make_edit_video(path, [ShotSpec(21, 80, speed=0.0)])
    with open_source(path) as src:
        det = detect_shots(src)
    assert det.shots == [(0, 80)]
    sel = _whole(path, 4)
    assert len(set(sel.indices)) == 4


def test_black_video(tmp_path: Path) -> None:
    path = tmp_path / "black.mp4"
    write_video(path, [np.zeros((90, 160, 3), np.uint8)] * 40)
    with open_source(path) as src:
        det = detect_shots(src)
    assert det.shots == [(0, 40)]
    sel = _whole(path, 5)
    assert len(set(sel.indices)) == 5


def test_video_shorter_than_n(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    make_edit_video(path, [ShotSpec(22, 6)])
    sel = _whole(path, 10)
    assert len(sel.indices) == 10 and set(sel.indices) == set(range(6))
    assert len(_whole(path, 10, overflow="all").indices) == 6
    with pytest.raises(SamplingError):
        _whole(path, 10, overflow="error")


def test_corrupt_middle_never_crashes(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.mp4"
    make_edit_video(path, [ShotSpec(31, 60), ("cut", 0), ShotSpec(32, 60)], gop=20)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8))
    path.write_bytes(bytes(data))
    try:
        sel = _whole(path, 4)
    except FramepipeError:
        return  # a clear error is acceptable
    assert len(sel.indices) == 4


def test_bad_parameters_are_config_errors(edit: tuple[Path, object]) -> None:
    path, _ = edit
    with pytest.raises(FramepipeError, match="unknown shot detector parameter"):
        DetectorParams.from_params({"cut_treshold": 0.2})
    with pytest.raises(FramepipeError, match="unknown parameter"):
        _whole(path, 3, bogus=1)
    with pytest.raises(FramepipeError, match="must be"):
        _whole(path, 3, cut_ratio="x")


@pytest.mark.parametrize(
    "settings",
    [
        {"sampler": "keyframe", "sampler_params": {"detector": "nope"}},
        {"clips": "shots", "clip_params": {"detector": "nope"}},
    ],
)
def test_an_unknown_detector_is_refused_by_the_settings_check(settings: dict) -> None:
    """Before any input is opened: the same check every command calls first."""
    from framepipe.config import SampleConfig

    with pytest.raises(ConfigError, match=r"^unknown shot detector 'nope'; known: builtin"):
        SampleConfig(n=3, **settings).check()


def test_keyframe_without_source_is_a_clear_error(edit: tuple[Path, object]) -> None:
    path, _ = edit
    with open_source(path) as src:
        info = src.info()
    _, fn = get_sampler("keyframe")
    with pytest.raises(SamplingError, match="needs the source"):
        fn(info, ClipSpec(info.id, 0, info.num_frames), n=3)


def test_clip_inside_video_uses_its_own_shots(edit: tuple[Path, object]) -> None:
    path, _truth = edit
    with open_source(path) as src:
        info = src.info()
        _, fn = get_sampler("keyframe")
        clip = ClipSpec(info.id, 40, 150, 1)
        sel = fn(info, clip, n=3, source=src)
    assert all(40 <= i < 150 for i in sel.indices)
    starts = [s["start_frame"] for s in sel.extra["shots"]]
    assert starts[0] == 40 and len(starts) == 3  # cuts at 60 and 120 inside the clip


# -- the signal comes from the source ----------------------------------------------------------
class ArraySource(Source):
    """A source held in memory (no file, no decoder): shots must work from its signal."""

    kind: ClassVar[str] = "array"

    def __init__(self, frames: np.ndarray) -> None:
        super().__init__("<memory>")
        self.frames = frames

    def info(self) -> SourceInfo:
        n, h, w, _ = self.frames.shape
        return SourceInfo(id="memory", kind="array", num_frames=n, width=w, height=h)

    def read(self, indices: Sequence[int]) -> FrameBatch:
        idx = [int(i) for i in indices]
        return FrameBatch(self.frames[idx], tuple(idx))


def two_shots(first: int = 40, second: int = 35) -> np.ndarray:
    """Frames panning over one texture, then (a hard cut at ``first``) over another."""
    a = [_frame(texture(51), k, 0.6, 51) for k in range(first)]
    b = [_frame(texture(52), k, 0.6, 52) for k in range(second)]
    return np.stack(a + b)


def test_read_signal_default_is_every_frame_as_yuv() -> None:
    src = ArraySource(two_shots(10, 10))
    sig = src.read_signal(2, 12, size=(32, 18), skip="bidir")  # nothing to skip here
    assert isinstance(sig, SmallFrames) and sig.errors == 0
    assert sig.indices.tolist() == list(range(2, 12))
    assert np.array_equal(sig.frames, rgb_to_yuv(src.read_small(2, 12, size=(32, 18))))
    ranges = src.read_signal_ranges([(3, 5), (4, 7), (15, 25)], size=(32, 18))
    assert ranges.indices.tolist() == [3, 4, 5, 6, *range(15, 20)]  # merged, cut to the source
    whole = src.read_signal(0, 20, size=(32, 18))
    assert np.array_equal(ranges.frames, whole.frames[ranges.indices])
    assert len(src.read_signal_ranges([], size=(32, 18))) == 0
    with pytest.raises(DecodeError, match="outside"):
        src.read_signal(0, 21)


def test_shots_of_a_source_without_a_file() -> None:
    src = ArraySource(two_shots())
    det = detect_shots(src)
    assert det.shots == [(0, 40), (40, 75)]
    assert det.stats["decode_errors"] == 0 and det.stats["signal_frames"] == 75
    sel = _whole_of(src, 4)
    assert len(sel.extra["shots"]) == 2 and sel.extra["frame_shots"] == [0, 0, 1, 1]


def test_video_signal_skips_frames_and_refines_exactly(edit: tuple[Path, object]) -> None:
    path, _ = edit
    with open_source(path) as src:
        fast = src.read_signal(0, 60)  # B-frames skipped: gaps
        full = src.read_signal(0, 60, skip="none")
        around = src.read_signal_ranges([(10, 14), (12, 20)])
    assert 0 < len(fast) < 60 and set(fast.indices.tolist()) <= set(range(60))
    assert full.indices.tolist() == list(range(60))
    assert around.indices.tolist() == list(range(10, 20))
    assert np.array_equal(around.frames, full.frames[10:20])


def _whole_of(src: Source, n: int, sampler: str = "keyframe", **params: object) -> Selection:
    info = src.info()
    _, fn = get_sampler(sampler)
    return fn(info, ClipSpec(info.id, 0, info.num_frames), n=n, source=src, **params)


NO_DECODERS = """
import sys
for name in ("av", "decord", "open3d"):
    sys.modules[name] = None  # importing one now raises ImportError
sys.path[:0] = sys.argv[1:]
import test_keyframe as t
from framepipe.clips import plan_clips
from framepipe.shots import detect_shots
src = t.ArraySource(t.two_shots())
assert detect_shots(src).shots == [(0, 40), (40, 75)]
for name in ("keyframe", "uniform", "nview"):
    assert len(t._whole_of(src, 4, name).indices) == 4, name
assert len(plan_clips(src.info(), mode="shots", source=src)) == 1  # no clock: one clip
print("ok")
"""


def test_shots_and_samplers_need_no_decoding_library() -> None:
    """Shot detection and the samplers run with PyAV, decord and Open3D unimportable: they
    only consume what the source hands them."""
    here = Path(__file__).resolve().parent
    tests = here.parent
    proc = subprocess.run(
        [sys.executable, "-c", NO_DECODERS, str(here), str(tests)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tests.parent,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_unknown_options_are_one_line_errors(edit: tuple[Path, object]) -> None:
    path, _ = edit
    with pytest.raises(ConfigError) as exc:
        _whole(path, 3, "iframe", cut_ratio=3)  # a keyframe setting: not an iframe option
    assert (
        str(exc.value) == "unknown parameter 'cut_ratio' for sampler 'iframe' (options: overflow)"
    )
    with pytest.raises(ConfigError) as exc:
        _whole(path, 3, "keyframe", mode="endpoints")  # a uniform option
    msg = str(exc.value)
    assert msg.startswith("unknown parameter 'mode' for sampler 'keyframe' (options: overflow, ")
    assert "cut_threshold" in msg and "min_shot_s" in msg and "\n" not in msg
    assert len(_whole(path, 3, "iframe", overflow="all").indices) == 3
