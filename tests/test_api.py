"""The Python API as the README shows it: what ``framepipe`` exports, and how it is typed."""

from __future__ import annotations

import configparser
import inspect
import pkgutil
from pathlib import Path

import framepipe
import framepipe.runs.caption  # noqa: F401 - imports (nearly) every stage of the package

ROOT = Path(__file__).resolve().parents[1]


def test_exported_names_are_not_shadowed_by_submodules() -> None:
    """``from framepipe import SampleConfig, discover`` (the README's engine loop) gives the
    function: importing a submodule binds its name on the package, so no exported name may
    be a submodule's too (``framepipe/discover.py`` made ``discover`` the module once any
    run had been imported)."""
    from framepipe import SampleConfig, discover  # noqa: F401

    assert inspect.isfunction(discover)
    submodules = {m.name for m in pkgutil.iter_modules(framepipe.__path__)}
    assert sorted(set(framepipe.__all__) & submodules) == []
