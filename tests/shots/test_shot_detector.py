"""The shot detector on what is not a shot change (brightness ramps, exposure changes, fast
steady motion) and on fades at the ends of a video (issue 11, section 2).

All media are generated: textured shots (colour blobs, detail, shapes) panning, with sensor
noise, encoded with libx264 and B-frames, decoded through the ordinary source.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from media import ffmpeg
from shot_media import (
    EditTruth,
    ShotSpec,
    expose,
    grey_ramp,
    make_edit_video,
    texture,
)

from framepipe.samplers.base import get_sampler
from framepipe.shots import ShotDetection, detect_shots
from framepipe.shots.features import compute_features, pair_distance
from framepipe.shots.transitions import motion_share
from framepipe.sources.base import open_source, rgb_to_yuv
from framepipe.types import ClipSpec, SmallFrames


def _detect(path: Path) -> ShotDetection:
    with open_source(path) as src:
        return detect_shots(src)


def _kinds(det: ShotDetection) -> list[str]:
    return [t.kind for t in det.transitions]


def _cosine(n: int, low: float, high: float, period: int) -> tuple[float, ...]:
    """Gains swinging smoothly between ``low`` and ``high`` every ``period`` frames."""
    return tuple(
        low + (high - low) * 0.5 * (1.0 - math.cos(2.0 * math.pi * k / period)) for k in range(n)
    )


# -- brightness ramps and exposure: no change of content, no cut --------------------------------


@pytest.mark.parametrize(
    ("low", "high", "noise"),
    [(40, 230, 0.0), (40, 230, 3.0), (20, 240, 2.0)],
    ids=["clean", "noisy", "wide"],
)
def test_grey_ramp_is_no_cut(tmp_path: Path, low: int, high: int, noise: float) -> None:
    """A flat grey frame brightening and darkening again and again (no black frame): no
    transition at all (the detector used to report a dozen hard cuts)."""
    path = tmp_path / "ramp.mp4"
    n = grey_ramp(path, cycles=4, period=60, low=low, high=high, noise=noise)
    det = _detect(path)
    assert det.transitions == [], det.transitions
    assert det.shots == [(0, n)]


def test_uniform_field_fading_through_black_fades(tmp_path: Path) -> None:
    """A uniform field fading out to black and in again, four times (as PySceneDetect's
    ``fades.mp4``): every dip through black is a fade, even though the same flat picture
    comes back; the fade in at the start and out at the end are fades at the video's ends;
    nothing else."""
    path = tmp_path / "ramp_black.mp4"
    n = grey_ramp(path, cycles=4, period=50, low=0, high=255, noise=2.0)
    det = _detect(path)
    assert set(_kinds(det)) == {"fade"}, det.transitions
    assert det.transitions[0].frame == 0 and det.transitions[-1].frame == n
    inner = [t for t in det.transitions if 0 < t.frame < n]
    assert len(inner) == 3, det.transitions
    for t, black in zip(inner, (50, 100, 150)):  # the black frame is inside each fade
        assert t.start_frame <= black < t.end_frame and abs(t.frame - black) <= 4, t


def test_lamp_switched_off_and_on_is_no_fade(tmp_path: Path) -> None:
    """A textured shot that drops to black for a few frames at once and comes back the same
    (no ramp: a light switched off and on) is one shot."""
    path = tmp_path / "lamp.mp4"
    gains = tuple(0.0 if 90 <= k < 96 else 1.0 for k in range(200))
    make_edit_video(path, [ShotSpec(57, 200, speed=0.6, gain=gains, noise=2.0)])
    det = _detect(path)
    assert det.shots == [(0, 200)], det.transitions


def test_gradual_exposure_change_on_textured_content_is_no_cut(tmp_path: Path) -> None:
    """Auto-exposure / a sunset: a panning textured shot whose exposure swings from a
    quarter to 2.5 times and back twice over 8 s: one shot, no transition."""
    path = tmp_path / "exposure.mp4"
    gains = _cosine(200, 0.25, 2.5, 100)
    truth = make_edit_video(path, [ShotSpec(51, 200, speed=0.8, gain=gains, noise=2.0)])
    det = _detect(path)
    assert det.transitions == [], det.transitions
    assert det.shots == [(0, truth.num_frames)]


def test_quick_sunset_is_no_dissolve(tmp_path: Path) -> None:
    """In one second the light turns orange and dims to a third (white balance and exposure
    together, as when the sun sets behind a cloud or a camera re-balances): no transition."""
    path = tmp_path / "sunset.mp4"
    gains = []
    for k in range(250):
        t = min(1.0, max(0.0, (k - 80) / 25))
        dim = 1.0 - 0.7 * t
        gains.append(((1.0 + 0.6 * t) * dim, (1.0 - 0.1 * t) * dim, (1.0 - 0.6 * t) * dim))
    make_edit_video(path, [ShotSpec(95, 250, speed=0.5, gain=tuple(gains), noise=2.0)])
    det = _detect(path)
    assert det.transitions == [], det.transitions


@pytest.mark.parametrize("gain", [1.8, 0.45], ids=["brighter", "darker"])
def test_sudden_exposure_jump_is_no_cut(tmp_path: Path, gain: float) -> None:
    """Decided: a sudden exposure jump of the same picture (the camera's gain stepping, a
    light switched on) is no cut: the content does not change. Only the exposure-normalised
    pictures are compared for that decision."""
    path = tmp_path / "jump.mp4"
    gains = tuple(1.0 if k < 100 else gain for k in range(200))
    make_edit_video(path, [ShotSpec(52, 200, speed=0.8, gain=gains, noise=2.0)])
    det = _detect(path)
    assert det.transitions == [], det.transitions


def test_normalised_distance_ignores_exposure() -> None:
    """Unit level: a picture and the same picture exposed 1.6x (a fifth of it saturating)
    or lifted are far apart in raw terms and (almost) the same once normalised; another
    picture is far either way."""
    a = texture(61)[:90, :160]
    pics = [a, expose(a, 1.6), np.clip(a.astype(np.int16) + 40, 0, 255).astype(np.uint8)]
    pics.append(texture(62)[:90, :160])
    small = [np.asarray(_small(p)) for p in pics]
    f = compute_features(SmallFrames(np.arange(4), rgb_to_yuv(np.stack(small))))
    first, rest = np.zeros(3, np.int64), np.arange(1, 4)
    raw = pair_distance(f, first, rest)
    norm = pair_distance(f, first, rest, normalised=True)
    assert raw[0] > 0.15 and raw[1] > 0.1  # exposure changes look like big changes raw
    assert norm[0] < 0.05 and norm[1] < 0.05  # but not once normalised
    assert norm[2] > 0.3  # a change of content stays one


def _small(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((64, 36), Image.Resampling.BILINEAR))


# -- cuts must still be found ------------------------------------------------------------------


def _mean_luma(seed: int) -> float:
    return float(texture(seed)[..., :3].mean())


def test_cuts_between_similar_and_very_different_brightness(tmp_path: Path) -> None:
    """Hard cuts between shots of about the same brightness and between a dark shot and a
    bright one (and back) are all found within one frame, with nothing else."""
    match = _mean_luma(71) / _mean_luma(72)
    script: list[ShotSpec | tuple[str, int]] = [
        ShotSpec(71, 60, noise=2.0),
        ("cut", 0),
        ShotSpec(72, 60, gain=(match**2.2,) * 60, noise=2.0),  # the same mean brightness
        ("cut", 0),
        ShotSpec(73, 60, gain=(0.12,) * 60, noise=2.0),  # dark
        ("cut", 0),
        ShotSpec(74, 60, gain=(2.2,) * 60, noise=2.0),  # bright
        ("cut", 0),
        ShotSpec(75, 60, gain=(0.2,) * 60, noise=2.0),  # dark again
    ]
    path = tmp_path / "cuts.mp4"
    truth = make_edit_video(path, script)
    det = _detect(path)
    cuts = [t.frame for t in det.transitions if t.kind == "cut"]
    assert len(det.transitions) == len(truth.cuts), det.transitions
    for c in truth.cuts:
        assert any(abs(f - c) <= 1 for f in cuts), (c, cuts)


# -- fades at the start and at the end ----------------------------------------------------------


@pytest.fixture(scope="module", params=[(10, 20, 25), (1, 14, 14)], ids=["black10", "black1"])
def edge_fades(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, EditTruth]:
    black, fade_in, fade_out = request.param
    path = tmp_path_factory.mktemp("edge_fades") / "fades.mp4"
    script: list[ShotSpec | tuple[str, int]] = [
        ("fade", fade_in),
        ShotSpec(53, 80, noise=2.0),
        ("cut", 0),
        ShotSpec(54, 80, noise=2.0),
        ("fade", fade_out),
    ]
    return path, make_edit_video(path, script, black=black)


def test_fades_at_start_and_end_are_fades(edge_fades: tuple[Path, EditTruth]) -> None:
    """A fade in from black at the start and a fade out to black at the end are reported as
    ``fade`` (never ``dissolve`` or ``cut``), at the video's ends, spanning their ramps."""
    path, truth = edge_fades
    det = _detect(path)
    n = truth.num_frames
    (first_in, last_in, _), (first_out, last_out, _) = truth.gradual
    assert _kinds(det) == ["fade", "cut", "fade"], det.transitions
    start, cut, end = det.transitions
    assert start.frame == 0 and start.start_frame == first_in == 0
    assert last_in - 3 <= start.end_frame <= last_in + 4  # the ramp, give or take a frame
    assert abs(cut.frame - truth.cuts[0]) <= 1
    assert end.frame == n and end.end_frame == n
    assert first_out - 4 <= end.start_frame <= first_out + 3
    assert last_out == n - 1
    # the edge fades are no boundaries: two shots, split at the cut
    assert det.shots == [(0, cut.frame), (cut.frame, n)]
    # a clip that ends (or starts) with the video keeps the fade there
    assert _kinds(det.restrict(cut.frame, n)) == ["fade"]
    assert _kinds(det.restrict(0, cut.frame)) == ["fade"]
    assert det.restrict(10, cut.frame + 10).transitions == [cut]


def test_keyframes_avoid_the_edge_fades(edge_fades: tuple[Path, EditTruth]) -> None:
    path, truth = edge_fades
    (_, last_in, _), (first_out, _, _) = truth.gradual
    with open_source(path) as src:
        info = src.info()
        _, fn = get_sampler("keyframe")
        sel = fn(info, ClipSpec(info.id, 0, info.num_frames), n=6, source=src)
    assert len(sel.indices) == 6
    assert all(last_in < i < first_out for i in sel.indices), sel.indices


# -- fast steady motion: no dissolve, no cut ------------------------------------------------------


@pytest.fixture(scope="module")
def motion_60s(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EditTruth]:
    """60 s, 9 shots, 8 hard cuts, no gradual transition; six shots are fast steady pans
    (4 to 12 px a frame at 160x90, i.e. 2.5-7.5 % of the width per frame, turning back at
    the texture's edges), three slow. (The detector used to find four dissolves here.)"""
    speeds = [0.5, 6.0, 8.0, 0.4, 10.0, 5.0, 0.3, 12.0, 4.0]
    script: list[ShotSpec | tuple[str, int]] = []
    for i, speed in enumerate(speeds):
        script += [ShotSpec(60 + i, 166 + 3 * (i % 3), speed=speed, noise=2.0), ("cut", 0)]
    path = tmp_path_factory.mktemp("motion") / "motion.mp4"
    return path, make_edit_video(path, script[:-1])


def test_fast_steady_motion_is_no_dissolve(motion_60s: tuple[Path, EditTruth]) -> None:
    path, truth = motion_60s
    assert len(truth.cuts) == 8 and truth.num_frames >= 60 * 25
    det = _detect(path)
    assert _kinds(det) == ["cut"] * 8, det.transitions
    for t, c in zip(det.transitions, truth.cuts):
        assert abs(t.frame - c) <= 1, (t, c)


def test_motion_share_tells_a_pan_from_a_cross_fade() -> None:
    """Unit level: camera motion is explained by a shift of the picture, a dissolve not."""
    tex_a, tex_b = texture(81), texture(82)
    pan = [_small(tex_a[20 : 20 + 90, 8 * k : 8 * k + 160]) for k in range(12)]
    fade = [
        _small((tex_a[:90, :160] * (1 - a) + tex_b[:90, :160] * a).astype(np.uint8))
        for a in np.linspace(0, 1, 12)
    ]
    shares = []
    for frames in (pan, fade):
        f = compute_features(SmallFrames(np.arange(12), rgb_to_yuv(np.stack(frames))))
        shares.append(motion_share(f, 0, 11))
    assert shares[0] > 0.8 and shares[1] < 0.2, shares


def test_the_signal_of_x264_at_ffmpegs_default_preset_is_exact(tmp_path: Path) -> None:
    """x264 at ffmpeg's default preset (``medium``: B-pyramid, three reference frames)
    makes P-frames that refer to B-frames. A signal that skipped every B-frame decoded those
    P-frames from a missing reference: most of its frames were off by several levels until
    the next keyframe (39 of 46 in this clip). The signal skips only frames nothing refers
    to: each frame it holds is the full decode's."""
    path = tmp_path / "medium.mp4"
    shots = "mandelbrot=s=160x90:r=25,trim=duration=3[a];testsrc2=s=160x90:r=25,trim=duration=3[b]"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"{shots};[a][b]concat=n=2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    with open_source(path) as src:
        n = src.info().num_frames
        fast = src.read_signal(0, n)
        every = src.read_signal(0, n, skip="none")
    assert n == 150 and len(fast) < n
    np.testing.assert_array_equal(fast.frames, every.frames[fast.indices])


def test_cuts_in_hevc_with_referenced_b_frames_are_found(tmp_path: Path) -> None:
    """x265 makes B-frames that other frames refer to; HEVC's decoder, told to skip every
    B-frame, skipped those too and put out nothing more until the next keyframe, so the
    signal of a 240-frame file held 2 frames and none of its 3 cuts was found. The signal
    now skips only frames nothing refers to there: it holds frames all through, each the
    full decode's."""
    path = tmp_path / "edit.mp4"
    script: list[ShotSpec | tuple[str, int]] = [ShotSpec(1, 60)]
    for seed in (2, 3, 4):
        script += [("cut", 0), ShotSpec(seed, 60)]
    truth = make_edit_video(path, script, codec="libx265")
    with open_source(path) as src:
        n = src.info().num_frames
        fast = src.read_signal(0, n)
        every = src.read_signal(0, n, skip="none")
        det = detect_shots(src)
    assert int(np.diff(fast.indices).max()) <= 8
    np.testing.assert_array_equal(fast.frames, every.frames[fast.indices])
    assert [t.frame for t in det.transitions if t.kind == "cut"] == truth.cuts
