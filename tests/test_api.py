"""The Python API as the README shows it: what ``framepipe`` exports, and how it is typed."""

from __future__ import annotations

import configparser
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_sample_takes_n_as_its_third_argument_and_one_path_as_a_str_or_bytes(
    h264_path: Path, tmp_path: Path
) -> None:
    """``framepipe.sample(paths, out, 8)`` (n where the config goes, as a user guesses) ran
    into ``AttributeError: 'int' object has no attribute 'storage_options'``: an int there
    is n. One path given as a ``str``, ``Path`` or ``bytes`` (a name that is not UTF-8) is
    that path, and anything else that is not a config is one clear TypeError."""
    summary = framepipe.sample([h264_path], tmp_path / "a", 3, workers=0)
    assert (summary.done, [len(r.indices) for r in summary.records]) == (1, [3])
    summary = framepipe.sample(os.fsencode(h264_path), tmp_path / "b", 2, workers=0)
    assert [r.source for r in summary.records] == [str(h264_path)]
    with pytest.raises(TypeError, match=r"cfg must be a SampleConfig .*not str"):
        framepipe.sample([h264_path], tmp_path / "c", "8", workers=0)
    with pytest.raises(framepipe.ConfigError, match=r"sample: SampleConfig has no field 'frames'"):
        framepipe.Pipeline(sample={"frames": 8})
    assert framepipe.Pipeline(sample=4).sample.n == 4


def test_discover_takes_one_path_as_a_path_not_as_its_characters(
    h264_path: Path, tmp_path: Path
) -> None:
    """``discover("videos/a.mp4")`` walked each character of the string as a path: ``/``
    among them, the whole file system. One path (``str``, ``Path``, ``bytes``) is one path;
    an item that is no path is a TypeError naming it, not one from deep in pathlib."""
    for one in (str(h264_path), h264_path, os.fsencode(h264_path)):
        inputs, notes = framepipe.discover(one)
        assert ([i.path for i in inputs], notes) == ([h264_path], [])
    with pytest.raises(TypeError, match=r"each of paths must be a file or folder path.*None"):
        framepipe.discover([h264_path, None])  # type: ignore[list-item]
    assert framepipe.open_source(os.fsencode(h264_path)).info().num_frames > 0


def test_paths_of_none_or_one_input_are_taken_and_anything_else_is_a_type_error(
    h264_path: Path, tmp_path: Path
) -> None:
    """``sample(None, out, inputs_from="rows.jsonl")`` (a run of a manifest alone) failed
    with ``'NoneType' object is not iterable``, one ``Input`` with ``'Input' object is not
    iterable``, and an int the same way: None is no paths, one Input is that input, and
    anything else is a TypeError saying what paths may be."""
    from framepipe.discovery import Input

    rows = tmp_path / "rows.jsonl"
    rows.write_text(f'{{"path": "{h264_path}"}}\n')
    summary = framepipe.sample(None, tmp_path / "a", 2, workers=0, inputs_from=rows)
    assert [r.source for r in summary.records] == [str(h264_path)]
    summary = framepipe.sample(Input(h264_path, "video"), tmp_path / "b", 2, workers=0)
    assert [r.source for r in summary.records] == [str(h264_path)]
    with pytest.raises(TypeError, match=r"^paths must be a path, a URI, an Input .*not int$"):
        framepipe.sample(3, tmp_path / "c", 2, workers=0)  # type: ignore[arg-type]


def test_frames_held_in_memory_as_paths_are_refused_in_one_line_saying_to_save_them(
    tmp_path: Path,
) -> None:
    """``sample(frames, out)`` with a numpy array (or ``[frames]``) was a TypeError holding
    the array's whole repr, pages of lines; a PIL image did not say what to do either."""
    import numpy as np
    from PIL import Image

    frames = np.zeros((4, 32, 32, 3), np.uint8)
    for given in (frames, [frames[0]], Image.new("RGB", (8, 8)), [Image.new("RGB", (8, 8))]):
        with pytest.raises(TypeError, match=r"save frames held in memory as a video") as err:
            framepipe.sample(given, tmp_path / "out", 2, workers=0)  # type: ignore[arg-type]
        assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert not (tmp_path / "out").exists()


def test_paths_held_in_a_numpy_array_or_a_pandas_series_are_paths(
    h264_path: Path, tmp_path: Path
) -> None:
    """A column of paths (``df["path"]``, ``np.array([...])``) is a list of paths, not
    frames held in memory."""
    import numpy as np
    import pandas as pd

    for k, given in enumerate((np.array([str(h264_path)]), pd.Series([str(h264_path)]))):
        summary = framepipe.sample(given, tmp_path / f"out{k}", 2, workers=0)
        assert [r.source for r in summary.records] == [str(h264_path)]


USER_SCRIPT = """
from pathlib import Path
from framepipe import Pipeline, caption, discover, iter_caption, iter_sample, sample
from framepipe.discovery import Input

row = Input(Path("a.mp4"), "video", id="x", start_s=0.0, end_s=2.0)
sample([row, "videos/", Path("b.mp4"), b"c.mp4"], "out/", 8)
sample(b"videos/", "out/", 8)
sample(Path("videos/"), "out/")
iter_sample(iter([row]), "out/")
caption(iter([row]), "results.jsonl")
iter_caption("videos/")
Pipeline().run([row], "day1.jsonl")
Pipeline().iter(Path("day2/"))
discover(b"videos/")
"""


def test_paths_of_every_kind_the_readme_names_pass_a_users_type_check(tmp_path: Path) -> None:
    """The README says one path may be a ``str``, ``Path`` or ``bytes``, and that
    ``framepipe.discovery.Input`` objects (manifest rows) may be passed in ``paths``, as a
    list or any iterator; the functions were typed ``Iterable[str | Path]``, so a user's
    mypy refused each of those calls (``incompatible type "Input"``, ``"bytes"``, ``"Path"``)
    although they run."""
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    cmd = [sys.executable, "-m", "mypy", "--no-error-summary", str(script)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_settings_as_a_dict_with_a_field_it_lacks_is_a_config_error_naming_it() -> None:
    """``settings`` may be a dict of GenerationSettings' fields (the README); a misspelt one
    (``max_tokens``, the OpenAI name) was ``TypeError: GenerationSettings.__init__() got an
    unexpected keyword argument``, where ``sample={"frames": 8}`` is a ConfigError naming
    the argument, the field and the fields there are."""
    with pytest.raises(
        framepipe.ConfigError,
        match=r"^settings: GenerationSettings has no field 'max_tokens' \(fields: .*max_new_tokens",
    ):
        framepipe.Pipeline(settings={"max_tokens": 64})
    assert framepipe.Pipeline(settings={"max_new_tokens": 64}).settings.max_new_tokens == 64
