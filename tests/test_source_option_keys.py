"""A source option reaches the resume keys of the inputs whose kind takes it, and only when
it is not that kind's default: re-running a mixed folder with an option for its image
scenes (``--source-opt max_side=...``) redoes the scenes, never the videos."""

from __future__ import annotations

from pathlib import Path

import engine_plugins
import pytest
from scene_media import write_scene

from framepipe.config import SampleConfig
from framepipe.output import read_records
from framepipe.runs.sample import MANIFEST, sample
from framepipe.sources.multiview.source import DEFAULT_MAX_SIDE


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = engine_plugins.video_folder(tmp_path_factory.mktemp("mixed"), [12])
    (folder / "broken.mp4").unlink(missing_ok=True)
    write_scene(folder / "scene", [(az, 10.0) for az in range(0, 360, 60)])
    return folder


def _keys(out: Path) -> dict[str, str]:
    """The key of each kind's newest record."""
    return {r["kind"]: r["key"] for r in read_records(out / MANIFEST)}


def test_an_option_of_another_kind_or_at_its_default_leaves_the_keys_alone() -> None:
    plain = SampleConfig(n=4)
    other = SampleConfig(n=4, source_options={"max_side": 256, "num_views": 12})
    at_default = SampleConfig(n=4, source_options={"max_side": DEFAULT_MAX_SIDE})
    assert other.key_parts("video") == plain.key_parts("video")
    assert at_default.key_parts("multiview") == plain.key_parts("multiview")
    assert other.key_parts("multiview") != plain.key_parts("multiview")
    assert other.key_parts("multiview")["source_options"] == {"max_side": 256}


def test_rerunning_with_an_option_for_the_scenes_redoes_only_the_scenes(
    mixed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = sample([mixed], out, SampleConfig(n=4), workers=0)
    assert (first.done, first.skipped, first.failed) == (2, 0, [])
    before = _keys(out)
    again = sample([mixed], out, SampleConfig(n=4, source_options={"max_side": 64}), workers=0)
    assert (again.done, again.skipped) == (1, 1)
    after = _keys(out)
    assert after["video"] == before["video"] and after["multiview"] != before["multiview"]
    kinds = [r["kind"] for r in read_records(out / MANIFEST)]
    assert kinds.count("video") == 1  # other settings for the scene: a record beside
    at_default = SampleConfig(n=4, source_options={"max_side": DEFAULT_MAX_SIDE})
    redo = sample([mixed], out, at_default, workers=0)  # the first run's settings, said again
    assert (redo.done, redo.skipped) == (0, 2)
