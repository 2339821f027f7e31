"""The built-in shot detector, class by class, on pictures it was not designed on: ffmpeg's
lavfi test sources (mandelbrot, life, cellauto, testsrc2, gradients, smptebars, sierpinski,
flat fields, noise) and scrolling stripes and rings, 160x90, encoded with libx264 and
B-frames, read through the ordinary source.

Classes: hard cuts, cuts between alike tones (the new shot's colour histograms matched to
the old one's: only structure tells them apart), a flat field cut to a busy picture,
dissolves (also between textures of one kind, whose structure does not change), fades
through black (also the long linear fade of a bright flat field), flashes (no cut) and fast
motion (no cut).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shot_media import FPS, ShotSpec, lavfi_frames, make_edit_video, match_tones, waves, write_video

from framepipe.shots import ShotDetection, detect_shots
from framepipe.sources.base import open_source

SOURCES = {
    "mandelbrot": "mandelbrot=s=320x180:start_scale=2.5:end_scale=0.3:inner=period",
    "life": "life=s=80x45:seed=7:ratio=0.3:mold=10:life_color=#ffa040:death_color=#102040",
    "cellauto": "cellauto=s=160x90:rule=110:seed=3,colorchannelmixer=rr=0.3:gg=0.9:bb=0.6",
    "testsrc2": "testsrc2=s=320x180",
    "gradients": "gradients=s=320x180:c0=#3050ff:c1=#ffd020:type=2:speed=0.03:seed=5",
    "smptebars": "smptebars=s=320x180",
    "sierpinski": "sierpinski=s=320x180:seed=4:type=carpet",
    "flat": "color=c=#c03060:s=160x90",
    "noise": "color=c=#608040:s=160x90,noise=alls=40:allf=t+u",
}


def _detect(path: Path) -> ShotDetection:
    with open_source(path) as src:
        return detect_shots(src)


def _inner(det: ShotDetection) -> list[tuple[int, str]]:
    """``(frame, kind)`` of every boundary between shots (not the fades at the ends)."""
    return [(t.frame, t.kind) for t in det.transitions if det.start < t.frame < det.end]


def _edit(path: Path, shots: list[np.ndarray]) -> list[int]:
    """Shots joined by hard cuts; returns the first frame of every shot after the first."""
    write_video(path, [f for s in shots for f in s])
    return list(np.cumsum([len(s) for s in shots])[:-1])


def test_cuts_between_lavfi_sources(tmp_path: Path) -> None:
    """Nine shots of nine sources (a flat field and temporal noise among them), 1.5-2.5 s
    each, joined by hard cuts: every cut is found within one frame, nothing else."""
    shots = [lavfi_frames(g, 38 + 6 * (k % 3)) for k, g in enumerate(SOURCES.values())]
    path = tmp_path / "cuts.mp4"
    cuts = _edit(path, shots)
    found = _inner(_detect(path))
    assert len(found) == len(cuts), (found, cuts)
    for (f, kind), c in zip(found, cuts):
        assert kind == "cut" and abs(f - c) <= 1, (found, cuts)


def test_flat_field_cut_to_a_busy_picture_is_exact(tmp_path: Path) -> None:
    """A flat red field (no spread: nothing to normalise) cut to a moving Mandelbrot zoom:
    one cut, on the first Mandelbrot frame."""
    path = tmp_path / "flat_busy.mp4"
    red = lavfi_frames("color=c=red:s=160x90", 60)
    cuts = _edit(path, [red, lavfi_frames(SOURCES["mandelbrot"], 60)])
    assert _inner(_detect(path)) == [(cuts[0], "cut")]


@pytest.mark.parametrize(
    "colours", [((200, 40, 40), (40, 40, 200)), ((90, 90, 90), (250, 250, 250))]
)
def test_cut_between_alike_tones(tmp_path: Path, colours: tuple) -> None:
    """Scrolling stripes of one hue, then scrolling rings whose colour histograms are
    matched to the stripes' last frame, then stripes again: brightness and colour alike,
    the pictures not. Both cuts are found."""
    a = waves(50, rings=False, period=14, speed=1.5, colours=colours)
    b = waves(50, rings=True, period=10, speed=1.0, colours=((20, 200, 90), (240, 230, 20)))
    b = match_tones(b, a[-1])
    c = match_tones(waves(50, rings=False, period=6, speed=-2.0, colours=colours), b[-1])
    path = tmp_path / "alike.mp4"
    cuts = _edit(path, [a, b, c])
    found = _inner(_detect(path))
    assert [k for _, k in found] == ["cut", "cut"], found
    assert all(abs(f - c_) <= 1 for (f, _), c_ in zip(found, cuts)), (found, cuts)


def _blend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = (np.arange(1, len(a) + 1) / (len(a) + 1))[:, None, None, None]
    return (a * (1 - w) + b * w).astype(np.uint8)


@pytest.mark.parametrize(
    ("first", "second"), [("testsrc2", "mandelbrot"), ("gradients", "life"), ("flat", "cellauto")]
)
def test_dissolve_between_lavfi_sources(tmp_path: Path, first: str, second: str) -> None:
    """A one-second cross-dissolve: one transition, a dissolve, inside the blend."""
    a, b = lavfi_frames(SOURCES[first], 75), lavfi_frames(SOURCES[second], 115)
    path = tmp_path / "dissolve.mp4"
    write_video(path, [*a[:50], *_blend(a[50:], b[:25]), *b[25:]])
    found = _inner(_detect(path))
    assert len(found) == 1 and found[0][1] == "dissolve", found
    assert 50 - 2 <= found[0][0] <= 75 + 2, found


@pytest.mark.parametrize(
    ("first", "second", "ramp_frames"),
    [
        ("smptebars", "mandelbrot", 12),
        ("flat", "flat", 12),
        ("color=c=#f0d0b0:s=160x90", "noise", 16),
    ],
)
def test_fade_through_black(tmp_path: Path, first: str, second: str, ramp_frames: int) -> None:
    """Out to black over 12 frames, 4 black frames, in over 12 frames: one fade, spanning
    the black frames. Between two flat fields too (the same flat field: still a fade). A
    bright flat field fading out linearly over 16 frames (its first steps are a few per cent
    of its level, and a step of level between flat fields is a cut) is one fade too, with no
    cut where it begins."""
    n = ramp_frames
    a = lavfi_frames(SOURCES.get(first, first), 50 + n)
    b = lavfi_frames(SOURCES[second], 50 + n)
    ramp = (1 - np.arange(1, n + 1) / n)[:, None, None, None]
    black = np.zeros((4, *a.shape[1:]), np.uint8)
    frames = [*a[:50], *(a[50:] * ramp).astype(np.uint8), *black]
    frames += [*(b[:n] * ramp[::-1]).astype(np.uint8), *b[n:]]
    path = tmp_path / "fade.mp4"
    write_video(path, frames)
    found = _inner(_detect(path))
    assert [k for _, k in found] == ["fade"], found
    assert 50 <= found[0][0] <= 50 + n + 4 + n, found


def test_dissolves_between_textures_of_one_kind(tmp_path: Path) -> None:
    """Slow pans over four textures of one kind (colour blobs, fine detail and discs: the
    same structure, other colours and places) joined by dissolves of 16, 24 and 32 frames:
    three dissolves, nothing else. Their structure does not change, so it must not dilute
    the change of colour and layout."""
    script: list[ShotSpec | tuple[str, int]] = [ShotSpec(31, 100, noise=2.0)]
    for k, length in enumerate((16, 24, 32)):
        script += [("dissolve", length), ShotSpec(32 + k, 100, noise=2.0)]
    path = tmp_path / "textures.mp4"
    truth = make_edit_video(path, script)
    found = _inner(_detect(path))
    assert [k for _, k in found] == ["dissolve"] * 3, (found, truth.gradual)
    for (f, _), (a, b, _) in zip(found, truth.gradual):
        assert a - 2 <= f <= b + 2, (found, truth.gradual)


def test_flashes_are_no_cut(tmp_path: Path) -> None:
    """Flash frames (one, two and three frames much brighter) inside a testsrc2 shot and a
    Mandelbrot shot: the only boundary is the cut between the shots."""
    a, b = lavfi_frames(SOURCES["testsrc2"], 100), lavfi_frames(SOURCES["mandelbrot"], 100)
    for pics, at, k in ((a, 30, 1), (a, 70, 3), (b, 50, 2)):
        pics[at : at + k] = np.minimum(255, pics[at : at + k].astype(np.uint16) * 2 + 90)
    path = tmp_path / "flash.mp4"
    cuts = _edit(path, [a, b])
    assert _inner(_detect(path)) == [(cuts[0], "cut")]


@pytest.mark.parametrize("source", ["testsrc2", "sierpinski", "life"])
def test_fast_motion_is_no_cut(tmp_path: Path, source: str) -> None:
    """A picture scrolling 4 % of its width a frame (wrapping round) for 4 s: no boundary.
    Temporal noise (every pixel new every frame) for 4 s: no boundary either."""
    pics = lavfi_frames(f"{SOURCES[source]},scroll=h=0.04:v=0.01", 4 * FPS)
    noise = lavfi_frames(SOURCES["noise"], 4 * FPS)
    path = tmp_path / "fast.mp4"
    cuts = _edit(path, [pics, noise])
    assert _inner(_detect(path)) == [(cuts[0], "cut")]
