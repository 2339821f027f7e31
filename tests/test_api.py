"""The Python API as the README shows it: what ``framepipe`` exports, and how it is typed."""

from __future__ import annotations

import configparser
import inspect
import pkgutil
from pathlib import Path

import framepipe
import framepipe.runs.caption  # imports (nearly) every stage of the package

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


def test_package_ships_its_type_hints() -> None:
    """A user's mypy reads framepipe's hints only from a package marked ``py.typed`` (PEP
    561; unmarked, every framepipe name is an error or ``Any``): the marker is there and is
    installed with the package."""
    assert (ROOT / "framepipe" / "py.typed").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "py.typed" in cfg.get("options.package_data", "framepipe", fallback="").split()
