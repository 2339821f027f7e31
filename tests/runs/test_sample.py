"""``sample(keep_records=False)`` counts every record without keeping it; the CLI asks for
that (it only prints the counts)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import engine_plugins
import numpy as np
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.config import SampleConfig
from framepipe.errors import ConfigError
from framepipe.output import read_records
from framepipe.runs.common import RunSummary
from framepipe.runs.sample import MANIFEST, sample

# the module itself (``framepipe.sample`` is the function, re-exported)
sample_mod = importlib.import_module("framepipe.runs.sample")

CFG = SampleConfig(n=2, clip_seconds=0.5)  # 30 frames: 2 clips, 12 frames: 1 clip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return engine_plugins.video_folder(tmp_path_factory.mktemp("keep"), [30, 12])


def _counts(s: RunSummary) -> tuple[int, int, int]:
    return s.done, s.skipped, len(s.failed)


def test_a_summary_shown_in_a_notebook_counts_its_records_without_printing_them(
    inputs: Path, tmp_path: Path
) -> None:
    """A notebook cell ending with the summary showed its repr: every record in full (about
    1 kB each; pages for a folder of videos). The counts show, the records stay a field."""
    summary = sample([inputs], tmp_path / "out", CFG, workers=0)
    assert len(summary.records) == 4
    shown = repr(summary)
    assert shown.startswith("RunSummary(done=3, skipped=0, failed=[(")
    assert "ClipResult" not in shown and "indices" not in shown


@pytest.mark.parametrize("workers", [0, 1])
def test_counts_without_keeping_records(inputs: Path, tmp_path: Path, workers: int) -> None:
    kept = sample([inputs], tmp_path / "kept", CFG, workers=workers)
    light = sample([inputs], tmp_path / "light", CFG, workers=workers, keep_records=False)
    assert _counts(kept) == _counts(light) == (3, 0, 1)
    assert light.records == [] and len(kept.records) == 4
    assert sorted(light.failed) == sorted(kept.failed)
    assert light.failed[0][0] == str(inputs / "broken.mp4")
    # the manifest has every record either way
    for out, s in ((tmp_path / "kept", kept), (tmp_path / "light", light)):
        recs = list(read_records(out / MANIFEST))
        assert len(recs) == 4
        assert sum(r["status"] == "ok" for r in recs) == s.done
    assert sorted(r.key or "" for r in kept.records) == sorted(
        r["key"] for r in read_records(tmp_path / "light" / MANIFEST)
    )
    # a re-run counts what is done without keeping anything either
    again = sample([inputs], tmp_path / "light", CFG, workers=workers, keep_records=False)
    assert _counts(again) == (0, 3, 1) and again.records == []


def test_the_cli_does_not_keep_records(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real = sample_mod.sample

    def spy(*args: Any, **kwargs: Any) -> RunSummary:
        summary = real(*args, **kwargs)
        seen.update(kwargs, summary=summary)
        return summary

    monkeypatch.setattr(sample_mod, "sample", spy)
    out = tmp_path / "cli"
    res = CliRunner().invoke(cli, ["sample", str(inputs), "-n", "2", "-o", str(out)])
    assert res.exit_code == 1, res.output  # the broken input failed
    assert seen["keep_records"] is False
    summary: RunSummary = seen["summary"]
    assert summary.records == [] and _counts(summary) == (2, 0, 1)
    assert "2 clip(s) written, 0 already done, 1 failed" in res.output
    assert len(list(read_records(out / MANIFEST))) == 3


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (SampleConfig(n="8"), "n ('8') must be an integer >= 1, not str"),  # type: ignore[arg-type]
        (SampleConfig(n=8.0), "n (8.0) must be an integer >= 1, not float"),  # type: ignore[arg-type]
        (SampleConfig(n=True), "n (True) must be an integer >= 1, not bool"),
        (SampleConfig(clip_seconds="1"), "--clip-seconds ('1') must be a number of seconds > 0"),  # type: ignore[arg-type]
        (
            SampleConfig(clip_seconds=1, stride_seconds="1"),  # type: ignore[arg-type]
            "--stride-seconds ('1') must be a number of seconds > 0",
        ),
    ],
)
def test_a_setting_of_the_wrong_type_is_refused_naming_it(
    inputs: Path, tmp_path: Path, cfg: SampleConfig, message: str
) -> None:
    """``SampleConfig`` from a script: a value of the wrong type is refused before any input
    is read, saying what it is (was "n (8) must be >= 1" for ``"8"``, and a clip length
    given as text failed every input with a TypeError)."""
    with pytest.raises(ConfigError) as err:
        sample([inputs], tmp_path / "out", cfg, workers=0)
    assert str(err.value) == message


def test_a_numpy_integer_is_a_frame_count() -> None:
    """n computed with numpy (``np.int64``) samples as the same int would, and its records
    are JSON."""
    cfg = SampleConfig(n=np.int64(8))  # type: ignore[arg-type]
    assert type(cfg.n) is int and cfg.key_parts() == SampleConfig(n=8).key_parts()
    cfg.check()


def test_a_run_refused_after_its_engine_opened_closes_the_engine(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inputs that cannot be listed (or a setting refused once they are) stop the run after
    its engine opened: the engine is closed, not left open (a cluster joined, a pool)."""
    import framepipe.runs.common as common

    closed: list[bool] = []
    opened = common.open_engine

    def opening(*args: Any, **kwargs: Any) -> Any:
        eng = opened(*args, **kwargs)
        close = eng.close

        def closing() -> None:
            closed.append(True)
            close()

        eng.close = closing
        return eng

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConfigError("refused")

    monkeypatch.setattr(common, "open_engine", opening)
    monkeypatch.setattr(common, "collect_inputs", refuse)
    with pytest.raises(ConfigError, match="refused"):
        sample([inputs], tmp_path / "out", SampleConfig(n=2), workers=1)
    assert closed == [True]


def test_a_run_refused_before_its_first_clip_leaves_nothing_on_disk(
    inputs: Path, tmp_path: Path
) -> None:
    """A sampler the decoding processes cannot be sent (a lambda; one defined in a notebook
    cell is refused the same way) is refused as the run starts: the output folder it had
    made, with the folders above it, stayed behind, empty."""
    out = tmp_path / "new" / "out"
    lam = SampleConfig(n=2, sampler=lambda info, clip, *, n, **kw: [0] * n)
    with pytest.raises(ConfigError, match="cannot be sent"):
        sample([inputs], out, lam, workers=1)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "new").mkdir()
    with pytest.raises(ConfigError, match="cannot be sent"):
        sample([inputs], out, lam, workers=1)
    assert list(tmp_path.iterdir()) == [tmp_path / "new"]  # a folder that was there stays
