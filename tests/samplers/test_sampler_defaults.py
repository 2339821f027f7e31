"""A sampler option given at its default is the same setting as one left out: the same resume
keys, so that a run of the command line (which names --overflow and --mode) and a run of the
Python API with the defaults find each other's clips done, and an output keeps one record per
clip whichever way it was made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.output import read_records
from framepipe.registry import canonical_params, option_defaults
from framepipe.runs.sample import MANIFEST, sample
from framepipe.samplers.base import DEFAULT_OVERFLOW, SAMPLERS, get_sampler, register_sampler
from framepipe.sources.base import Source
from framepipe.types import ClipSpec, Selection, SourceInfo


def _parts(sampler: str, **params: Any) -> dict[str, Any]:
    return SampleConfig(n=4, sampler=sampler, sampler_params=params).key_parts()


@pytest.mark.parametrize(
    ("sampler", "at_default", "other"),
    [
        (
            "uniform",
            {"overflow": DEFAULT_OVERFLOW, "mode": "centers", "fps": None},
            {"mode": "endpoints"},
        ),
        ("iframe", {"overflow": DEFAULT_OVERFLOW}, {"overflow": "all"}),
        (
            "keyframe",
            {"overflow": DEFAULT_OVERFLOW, "min_shot_s": 0.5, "size": [64, 36], "gradual_ratio": 2},
            {"min_shot_s": 1.0},
        ),
        (
            "nview",
            {"method": "auto", "signature_size": [16, 12], "max_signatures": 1024},
            {"method": "even"},
        ),
    ],
)
def test_an_option_at_its_default_makes_the_keys_of_one_left_out(
    sampler: str, at_default: dict[str, Any], other: dict[str, Any]
) -> None:
    assert _parts(sampler, **at_default) == _parts(sampler)
    assert _parts(sampler, **other) != _parts(sampler)
    assert _parts(sampler, **{**at_default, **other}) == _parts(sampler, **other)


def _plugin(
    info: SourceInfo,
    clip: ClipSpec,
    *,
    n: int,
    source: Source | None = None,
    offset: int = 0,
    **params: Any,
) -> Selection:
    raise AssertionError("never called")


def test_a_plugins_defaults_come_from_its_signature_and_its_declaration() -> None:
    assert option_defaults(_plugin) == {"offset": 0}
    register_sampler("test_defaults_plugin", defaults={"stride": 2})(_plugin)
    try:
        assert get_sampler("test_defaults_plugin")[1] is _plugin
        assert option_defaults(_plugin) == {"offset": 0, "stride": 2}
        assert canonical_params(_plugin, {"offset": 0, "stride": 2, "other": 1}) == {"other": 1}
        assert canonical_params(_plugin, {"offset": 1, "stride": 3}) == {"offset": 1, "stride": 3}
    finally:
        SAMPLERS._items.pop("test_defaults_plugin", None)


def test_the_cli_and_the_api_keep_one_record_per_clip(tmp_path: Path) -> None:
    video = engine_plugins.make_video(tmp_path / "v.mp4", 30, seed=1)
    out = tmp_path / "out"
    assert sample([video], out, SampleConfig(n=3), workers=0).done == 1
    res = CliRunner().invoke(cli, ["sample", str(video), "-n", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 already done" in res.output
    (rec,) = read_records(out / MANIFEST)
    assert rec["status"] == "ok"
    # and the other way: a CLI run, then the API with the options the CLI names
    out2 = tmp_path / "out2"
    res = CliRunner().invoke(cli, ["sample", str(video), "-n", "3", "-o", str(out2)])
    assert res.exit_code == 0, res.output
    named = SampleConfig(n=3, sampler_params={"overflow": DEFAULT_OVERFLOW, "mode": "centers"})
    again = sample([video], out2, named, workers=0)
    assert (again.done, again.skipped) == (0, 1)
    assert len(list(read_records(out2 / MANIFEST))) == 1


def test_values_are_compared_as_values() -> None:
    assert _parts("keyframe", gradual=1) != _parts("keyframe")  # True is not 1
    assert _parts("keyframe", size="64x36") != _parts("keyframe")  # another spelling
    assert _parts("nview", voxels=32) != _parts("nview")  # the source's default, not nview's


def test_a_misspelt_option_to_a_plugin_without_a_check_is_never_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from framepipe.errors import ConfigError
    from framepipe.samplers.base import check_sampler

    def anything(info: SourceInfo, clip: ClipSpec, *, n: int, **params: Any) -> Selection:
        raise AssertionError("never called")

    def keywords(info: SourceInfo, clip: ClipSpec, *, n: int, stride: int = 1) -> Selection:
        raise AssertionError("never called")

    # it declares its options (keyword parameters, or defaults of **params): a typo is refused
    register_sampler("test_declared_plugin", defaults={"stride": 2})(_plugin)
    try:
        for sampler, options in (
            ("test_declared_plugin", "offset, stride"),
            (keywords, "stride"),
        ):
            with pytest.raises(ConfigError) as exc:
                check_sampler(sampler, 4, {"strdie": 2})
            name = sampler if isinstance(sampler, str) else "keywords"
            want = (
                f"unknown parameter 'strdie' for sampler {name!r} (options: {options}). "
                "Did you mean 'stride'?"
            )
            assert str(exc.value) == want
            check_sampler(sampler, 4, {"stride": 3})  # its own: fine
    finally:
        SAMPLERS._items.pop("test_declared_plugin", None)
    # **params and nothing declared: the option is passed, with a warning naming it, once
    with caplog.at_level(logging.WARNING, logger="framepipe"):
        for _ in range(2):
            check_sampler(anything, 4, {"strdie": 2})
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "'anything' declares no options: parameter 'strdie'" in said[0]
    # a plug-in that takes any option says so with a check of its own: nothing to say
    caplog.clear()
    register_sampler("test_open_plugin", check=lambda n, params: None)(anything)
    try:
        with caplog.at_level(logging.WARNING, logger="framepipe"):
            check_sampler("test_open_plugin", 4, {"whatever": 1})
        assert not caplog.records
    finally:
        SAMPLERS._items.pop("test_open_plugin", None)


def test_a_plugin_without_overflow_runs_from_the_cli_and_refuses_an_overflow_given(
    tmp_path: Path,
) -> None:
    video = engine_plugins.make_video(tmp_path / "v.mp4", 12, seed=1)
    out = tmp_path / "out"
    args = ["sample", str(video), "-n", "3", "--sampler", "engine_plugins:kwonly", "-o", str(out)]
    res = CliRunner().invoke(cli, [*args, "--sampler-opt", "step=2"])
    assert res.exit_code == 0, res.output
    (rec,) = read_records(out / MANIFEST)
    assert rec["status"] == "ok", rec["error"]
    assert rec["indices"] == [0, 2, 4]
    # given explicitly (even at its default) to a sampler that has no such option: one line
    res = CliRunner().invoke(cli, [*args, "--overflow", "repeat_last"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == (
        "Error: unknown parameter 'overflow' for sampler 'engine_plugins:kwonly' (options: step)"
    )


def test_resume_keys_read_a_samplers_signature_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every input's resume keys ask which sampler options are at their default: the
    sampler's signature is read once per run, not once per input (a million-row manifest
    paid ``inspect.signature`` a million times), and the answer stays the same."""
    import inspect

    real = inspect.signature
    calls: list[object] = []

    def counting(fn: Any, *args: Any, **kw: Any) -> inspect.Signature:
        calls.append(fn)
        return real(fn, *args, **kw)

    monkeypatch.setattr(inspect, "signature", counting)
    cfg = SampleConfig(n=4, sampler="uniform", sampler_params={"mode": "centers"})
    first = cfg.key_parts()
    for _ in range(500):
        assert cfg.key_parts() == first
    assert len(calls) <= 1


def test_a_clip_planner_option_at_its_default_makes_the_keys_of_one_left_out() -> None:
    """``--clips shots --clip-opt min_shot_s=2`` (the planner's default) or a detector
    setting at its default re-ran every clip: the keys held the option as given. As for a
    sampler's options, one given at its default is the same setting as one left out (the
    planner's own ``min_shot_s`` is 2 s, not the detector's 0.5 s); another value is not."""
    from dataclasses import asdict

    from framepipe.shots import DetectorParams

    plain = SampleConfig(n=4, clips="shots").key_parts()
    detector = asdict(DetectorParams())
    for at_default in (
        {"min_shot_s": 2.0},
        {"min_shot_s": 2, "max_shot_s": 30.0},
        {"cut_threshold": detector["cut_threshold"], "detector": "builtin"},
    ):
        assert SampleConfig(n=4, clips="shots", clip_params=at_default).key_parts() == plain
    for other in ({"min_shot_s": 0.5}, {"cut_threshold": detector["cut_threshold"] * 2}):
        assert SampleConfig(n=4, clips="shots", clip_params=other).key_parts() != plain
