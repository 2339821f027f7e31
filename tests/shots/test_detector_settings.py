"""Each shot detector declares the settings it reads; one given that the chosen detector
does not read is refused (one line: the setting, the detector and its settings) by the one
check every path makes (:func:`framepipe.shots.checked_params`): ``detect_shots``, the
keyframe sampler and the shots clip planner, before any frame is read."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import engine_plugins
import pytest

from framepipe.clips import check_clips
from framepipe.errors import ConfigError
from framepipe.samplers.base import check_sampler
from framepipe.shots import DetectorParams, checked_params, detect_shots
from framepipe.shots.detectors import DETECTORS, ShotDetector, detect_builtin
from framepipe.sources.base import open_source


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return engine_plugins.make_video(tmp_path_factory.mktemp("detector-settings") / "v.mp4", 6)


class _NoFrames:
    """A source whose frames must not be read."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} read before the settings were checked")


def test_the_built_in_detectors_declare_every_setting() -> None:
    """A new DetectorParams field must be declared by the detectors that read it."""
    declared = {s for _, d in DETECTORS.items() for s in d.settings}
    assert declared >= {f.name for f in fields(DetectorParams)} - {"detector"}
    assert "transnet_threshold" not in DETECTORS.get("builtin").settings
    assert set(DETECTORS.get("transnetv2").settings) == {
        "transnet_threshold",
        "dark_level",
        "min_contrast",
    }


@pytest.mark.parametrize(
    ("params", "line"),
    [
        (
            {"detector": "transnetv2", "cut_ratio": 3},
            "cut_ratio is not a setting of shot detector 'transnetv2' (its settings: "
            "transnet_threshold, dark_level, min_contrast)",
        ),
        (
            {"detector": "transnetv2", "size": "32x32", "cut_ratio": 2.5},
            "cut_ratio, size are not settings of shot detector 'transnetv2' (its settings: "
            "transnet_threshold, dark_level, min_contrast)",
        ),
        ({"transnet_threshold": 0.9}, "transnet_threshold is not a setting of shot detector "),
    ],
)
def test_a_setting_the_detector_does_not_read_is_refused(
    video: Path, params: dict[str, Any], line: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        checked_params(params)
    assert str(exc.value).startswith(line) and "\n" not in str(exc.value)
    with open_source(video) as src:
        info = src.info()
    refused = r"is not a setting|are not settings"
    with pytest.raises(ConfigError, match=refused):
        detect_shots(_NoFrames(), info, **params)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=refused):
        check_sampler("keyframe", 3, params)
    with pytest.raises(ConfigError, match=refused):
        check_clips("shots", None, None, **params)


def test_the_settings_a_detector_reads_are_taken() -> None:
    assert checked_params({"detector": "transnetv2", "dark_level": 0.1}).dark_level == 0.1
    assert checked_params({"structure_threshold": 0.2}).structure_threshold == 0.2


def test_a_detector_declares_only_settings_that_exist() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        ShotDetector("mine", detect_builtin, settings=("cut_ratio", "nonsense"))


def test_a_plugin_detector_that_raises_fails_in_one_line_naming_the_detector(video: Path) -> None:
    """Its error reached the record bare (``RuntimeError: detector model missing``), or,
    once the keyframe sampler and the shots planner named themselves, as theirs."""
    from framepipe.errors import FramepipeError
    from framepipe.shots.detectors import register_detector

    def broken(*args: Any) -> Any:
        raise RuntimeError("detector model missing")

    register_detector(ShotDetector("test_raiser", broken))
    register_detector(ShotDetector("test_none", lambda *args: None))
    with open_source(video) as src:
        with pytest.raises(
            FramepipeError,
            match=r"^shot detector 'test_raiser' failed: RuntimeError: detector model missing$",
        ):
            detect_shots(src, detector="test_raiser")
        with pytest.raises(
            FramepipeError, match=r"^shot detector 'test_none' returned NoneType, not a Shot"
        ):
            detect_shots(src, detector="test_none")


@pytest.mark.parametrize("spelling", ["no", "off", "false", "0", False, 0])
def test_gradual_spelled_no_or_off_turns_dissolves_off(spelling: Any) -> None:
    """``--opt gradual=no`` reaches the settings as the string ``"no"``: it must mean
    False, not a non-empty string taken as True."""
    assert checked_params({"gradual": spelling}).gradual is False
    assert checked_params({"gradual": "yes"}).gradual is True


def test_a_gradual_that_is_no_yes_or_no_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"gradual \('maybe'\) must be true or false"):
        checked_params({"gradual": "maybe"})
    with pytest.raises(ConfigError, match=r"gradual \(1\.5\) must be true or false"):
        checked_params({"gradual": 1.5})


@pytest.mark.parametrize(
    ("setting", "detector"),
    [
        ("transnet_threshold", "transnetv2"),
        ("dark_level", "transnetv2"),
        ("cut_threshold", "builtin"),
    ],
)
def test_a_threshold_on_0_to_1_above_1_is_refused(setting: str, detector: str) -> None:
    """``framepipe shots --detector transnetv2 --opt transnet_threshold=2`` ran and found one
    shot per video: a probability above 1 is never reached. Refused in one line instead."""
    with pytest.raises(ConfigError, match=rf"^{setting} \(2\) must be between 0 and 1$"):
        checked_params({"detector": detector, setting: 2})
    assert getattr(checked_params({"detector": detector, setting: 1}), setting) == 1
