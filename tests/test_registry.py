"""framepipe.registry: one registry type for every plug-in family."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from framepipe.errors import ConfigError
from framepipe.registry import Registry


def _module(monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    mod = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, mod)
    exec(body, mod.__dict__)


def _registry_of_modules(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, builtins: dict[str, str], files: dict[str, str]
) -> Registry[Any]:
    """A registry whose built-ins are the modules ``files`` (name -> body, importing the
    registry as ``reg`` from ``fp_test_reg``), none imported yet."""
    reg: Registry[Any] = Registry("widget", builtins)
    holder = types.ModuleType("fp_test_reg")
    holder.reg = reg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fp_test_reg", holder)
    for name, body in files.items():
        (tmp_path / f"{name}.py").write_text(f"from fp_test_reg import reg\n{body}")
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return reg


def test_registry_loads_builtins_lazily_and_keeps_their_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    builtins = {"b": "fp_test_widgets", "a": "fp_test_widgets"}
    body = "reg.register('a', 1)\nreg.register('b', 2)\n"
    reg = _registry_of_modules(monkeypatch, tmp_path, builtins, {"fp_test_widgets": body})
    assert "fp_test_widgets" not in sys.modules  # nothing imported before the first lookup
    assert reg.names() == ["b", "a"]
    assert "fp_test_widgets" in sys.modules
    assert reg.get("a") == 1
    reg.register("c")(3)
    assert reg.names() == ["b", "a", "c"]
    assert "c" in reg and "d" not in reg


def test_registry_get_of_a_builtin_imports_only_its_own_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    builtins = {"a": "fp_test_widget_a", "b": "fp_test_widget_b"}
    files = {f"fp_test_widget_{n}": f"reg.register('{n}', {v})\n" for n, v in (("a", 1), ("b", 2))}
    reg = _registry_of_modules(monkeypatch, tmp_path, builtins, files)
    assert reg.get("a") == 1
    assert "fp_test_widget_a" in sys.modules and "fp_test_widget_b" not in sys.modules
    assert reg.names() == ["a", "b"]  # listing the names loads every built-in
    assert "fp_test_widget_b" in sys.modules


def test_registry_unknown_and_unavailable_names_are_one_line_errors() -> None:
    reg: Registry[int] = Registry("sampler", {"gone": "fp_no_such_module_anywhere"})
    reg.register("here", 1)
    assert "gone" in reg.unavailable()
    with pytest.raises(ConfigError, match=r"^sampler 'gone' is unavailable: No module named"):
        reg.get("gone")
    with pytest.raises(ConfigError, match=r"^unknown sampler 'nope'; known: here$"):
        reg.get("nope")
    assert reg.names() == ["here"]


def test_registry_names_the_name_near_an_unknown_one() -> None:
    """``--detector builtn`` (Python: ``detect_shots(detector="builtn")``) listed the names
    only; the one near it is named too, and a name near none gets no guess."""
    reg: Registry[int] = Registry("widget")
    reg.register("keyframe", 1)
    reg.register("uniform", 2)
    with pytest.raises(ConfigError, match=r"unknown widget 'keyfram'.* Did you mean 'keyframe'\?$"):
        reg.get("keyfram")
    with pytest.raises(ConfigError) as info:
        reg.get("zzz")
    assert "Did you mean" not in str(info.value)


def test_registry_finds_installed_plugins_through_entry_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata as md

    _module(monkeypatch, "fp_test_plugin", "def pick(*a, **k):\n    return [0]\n")
    good = md.EntryPoint("mine", "fp_test_plugin:pick", "framepipe.test_family")
    bad = md.EntryPoint("broken", "fp_test_plugin:missing", "framepipe.test_family")

    def fake(group: str) -> list[md.EntryPoint]:
        return [good, bad] if group == "framepipe.test_family" else []

    monkeypatch.setattr(md, "entry_points", fake)
    reg: Registry[Any] = Registry("sampler", entry_point_group="framepipe.test_family")
    assert reg.names() == ["mine"]
    assert reg.get("mine")() == [0]
    with pytest.raises(
        ConfigError, match="'broken' is unavailable: plug-in fp_test_plugin:missing"
    ):
        reg.get("broken")


def test_a_plugins_check_that_raises_any_error_is_one_line_naming_the_plugin(
    h264_path: Path, tmp_path: Path
) -> None:
    """A plug-in's check refusing with ValueError or KeyError (not ConfigError, as the
    README asks) was a traceback from ``framepipe sample`` and the API: it is the same
    refusal, one line naming the plug-in and its message, exit status 2."""
    from click.testing import CliRunner

    from framepipe.cli import cli
    from framepipe.clips import CLIP_PLANNERS, register_clip_planner
    from framepipe.config import SampleConfig
    from framepipe.samplers.base import SAMPLERS, register_sampler
    from framepipe.sources.base import SOURCES, Source, register_source

    def sampler_check(n: int, params: dict[str, Any]) -> None:
        raise ValueError("step must be even")

    def planner_check(**params: Any) -> None:
        params["span"]

    class Picky(Source):
        kind = "test_picky"

        def __init__(self, path: Path, *, depth: int = 1) -> None:
            raise ValueError(f"depth ({depth}) must be 1")

        info = read = None  # type: ignore[assignment]

    register_sampler("test_picky", check=sampler_check)(lambda *a, **k: [0])
    register_clip_planner("test_picky", check=planner_check)(lambda *a, **k: [])
    register_source(Picky)
    try:
        cases = [
            (SampleConfig(sampler="test_picky"), "sampler 'test_picky'", "ValueError: step"),
            (SampleConfig(clips="test_picky"), "clip mode 'test_picky'", "KeyError: 'span'"),
            (
                SampleConfig(kind="test_picky", source_options={"depth": 2}),
                "source kind 'test_picky'",
                r"ValueError: depth \(2\) must be 1",
            ),
        ]
        for cfg, who, what in cases:
            with pytest.raises(ConfigError, match=rf"^{who} refused its settings: {what}"):
                cfg.check()
        res = CliRunner().invoke(
            cli, ["sample", str(h264_path), "-o", str(tmp_path), "--sampler", "test_picky"]
        )
        assert res.exit_code == 2, res.output
        assert res.output.strip().splitlines() == [
            "Error: sampler 'test_picky' refused its settings: ValueError: step must be even"
        ]
    finally:
        for reg in (SAMPLERS, CLIP_PLANNERS, SOURCES):
            reg._items.pop("test_picky", None)


def test_a_plugin_registered_under_a_builtins_name_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``@register_sampler("uniform")`` silently replaced the built-in everywhere (the
    default sampler too); one named like a built-in whose module was not imported yet was
    itself replaced, without a word, once that module was."""
    builtins = {"a": "fp_test_builtin_a", "b": "fp_test_builtin_b"}
    files = {f"fp_test_builtin_{n}": f"reg.register('{n}', '{n} built in')\n" for n in "ab"}
    reg = _registry_of_modules(monkeypatch, tmp_path, builtins, files)
    assert reg.get("a") == "a built in"
    for name in ("a", "b"):  # b's module is imported first, and registers the built-in
        with pytest.raises(
            ConfigError, match=rf"^widget '{name}' is built into framepipe; register yours"
        ):
            reg.register(name, "mine")
        assert reg.get(name) == f"{name} built in"
    reg.register("a", reg.get("a"))  # the built-in itself, again: nothing changes
    reg.register("c", "mine")
    assert reg.names() == ["a", "b", "c"]


def test_an_installed_plugin_named_like_a_builtin_is_ignored_with_a_warning_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.metadata as md

    files = {"fp_test_builtin_c": "reg.register('a', 1)\n"}
    reg = _registry_of_modules(monkeypatch, tmp_path, {"a": "fp_test_builtin_c"}, files)
    reg = Registry("widget", {"a": "fp_test_builtin_c"}, entry_point_group="framepipe.test_family")
    sys.modules["fp_test_reg"].reg = reg  # type: ignore[attr-defined]
    _module(monkeypatch, "fp_test_plugin2", "def pick(*a, **k):\n    return [0]\n")
    clash = md.EntryPoint("a", "fp_test_plugin2:pick", "framepipe.test_family")
    monkeypatch.setattr(md, "entry_points", lambda group: [clash])
    with caplog.at_level("WARNING", logger="framepipe.registry"):
        assert reg.names() == ["a"] and reg.get("a") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "widget plug-in 'a' (fp_test_plugin2:pick) is ignored: 'a' is a built-in widget; its "
        "package must name it otherwise"
    ]
