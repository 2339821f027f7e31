"""Bad settings are refused before any work, on every command that has the option: exit
status 2, one line naming the option and the reason, nothing written, no model loaded; and
an optional dependency that is missing is named, with its extra, before any work too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import engine_plugins
import pytest
from click.testing import CliRunner

from framepipe.cli import cli
from framepipe.errors import MissingDependencyError
from framepipe.extras import check_extras
from framepipe.generate.backend import TransformersBackend

BAD = [
    (["-n", "0"], "n (0) must be >= 1"),
    (["-n", "-3"], "n (-3) must be >= 1"),
    (["--fps", "0"], "fps (0.0) must be > 0"),
    (["--clip-seconds", "-1"], "--clip-seconds (-1.0) must be > 0"),
    (["--sampler", "bogus"], "unknown sampler 'bogus'"),
    (["--sampler-opt", "foo=1"], "unknown parameter 'foo' for sampler 'uniform'"),
    (["--source-opt", "foo=bar"], "unknown source option 'foo' for video inputs"),
    (["--source-opt", "backend=nope"], "backend 'nope' is not one of"),
    (["--sampler", "nview", "--sampler-opt", "method=best"], "unknown nview method 'best'"),
    (["--clips", "shots", "--clip-opt", "min_shot_s=-1"], "min_shot_s (-1.0) must be >= 0"),
    (["--clips", "shots", "--clip-seconds", "2"], "--clip-seconds applies to --clips windows"),
    (["--sampler", "keyframe", "--fps", "2"], "--fps and --mode apply to the uniform sampler"),
]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return engine_plugins.make_video(tmp_path_factory.mktemp("bad-settings") / "v.mp4", 6)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any look at the model: reading its config or loading its weights."""
    seen: list[str] = []

    def look(what: str) -> Any:
        def called(*_: Any, **__: Any) -> Any:
            seen.append(what)
            raise AssertionError(f"the model was {what}")

        return called

    monkeypatch.setattr(TransformersBackend, "inspect", look("inspected"))
    monkeypatch.setattr(TransformersBackend, "load", look("loaded"))
    return seen


def _one_line_usage_error(res: Any, needle: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("args", "needle"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_sample_refuses_before_any_work(
    video: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sample", str(video), "-o", str(out), *args])
    _one_line_usage_error(res, needle)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(("args", "needle"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_caption_refuses_before_any_work_and_loads_no_model(
    video: Path, tmp_path: Path, args: list[str], needle: str, no_model: list[str]
) -> None:
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(cli, ["caption", str(video), "-o", str(out), "-q", "Q?", *args])
    _one_line_usage_error(res, needle)
    assert not out.exists() and no_model == []


@pytest.mark.parametrize("command", ["info", "shots"])
def test_info_and_shots_refuse_a_source_option_no_input_takes(video: Path, command: str) -> None:
    res = CliRunner().invoke(cli, [command, str(video), "--source-opt", "foo=bar"])
    _one_line_usage_error(res, "unknown source option 'foo' for video inputs")
    res = CliRunner().invoke(cli, [command, str(video), "--source-opt", "threads=0"])
    _one_line_usage_error(res, "threads (0) must be >= 1")


def test_an_option_of_another_kind_present_is_taken(video: Path, tmp_path: Path) -> None:
    """``num_views`` is the 3D models' own: refused for videos alone, taken with a model."""
    mesh = Path(__file__).resolve().parents[2] / "samples" / "torus_knot.ply"
    res = CliRunner().invoke(cli, ["info", str(video), "--source-opt", "num_views=4"])
    _one_line_usage_error(res, "unknown source option 'num_views' for video inputs")
    res = CliRunner().invoke(cli, ["info", str(video), str(mesh), "--source-opt", "num_views=4"])
    assert res.exit_code == 0, res.output


def _cli_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh process where ``module`` cannot be imported."""
    code = f"import sys; sys.modules[{module!r}] = None; from framepipe.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_parquet_without_pyarrow_is_refused_before_any_work(video: Path, tmp_path: Path) -> None:
    want = "pyarrow is not installed (needed for --format parquet): "
    want += "pip install 'framepipe[parquet]'"
    runs = [
        ("sample", str(video), "-o", str(tmp_path / "s"), "--format", "parquet"),
        ("caption", str(video), "-o", str(tmp_path / "r.parquet"), "-q", "Q?"),
        ("merge", str(video), "-o", str(tmp_path / "m.parquet")),
    ]
    for args in runs:
        r = _cli_without("pyarrow", *args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [f"Error: {want}"]
    assert list(tmp_path.iterdir()) == []  # not even a hidden journal


def test_quantize_is_refused_before_the_model_loads(
    video: Path, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from framepipe.generate.device import check_quantize

    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    with pytest.raises(MissingDependencyError, match=r"pip install 'framepipe\[quant\]'$"):
        check_quantize("4bit", torch.device("cuda"))  # on a GPU: the package is named
    loaded: list[str] = []
    monkeypatch.setattr(TransformersBackend, "load", lambda self: loaded.append("weights"))
    out = tmp_path / "r.jsonl"
    args = ["caption", str(video), "-o", str(out), "--model", str(tiny_model_dir)]
    res = CliRunner().invoke(cli, [*args, "--quantize", "4bit"])
    # without a GPU the first thing to say is that: bitsandbytes would not help
    want = "CUDA GPU" if not torch.cuda.is_available() else "framepipe[quant]"
    _one_line_usage_error(res, want)
    assert not out.exists() and loaded == []


def test_every_optional_setting_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import framepipe.extras

    monkeypatch.setattr(framepipe.extras, "installed", lambda module: False)
    for setting, value, extra in [
        ("format", "parquet", "parquet"),
        ("quantize", "8bit", "quant"),
        ("attn", "flash_attention_2", "flash"),
        ("detector", "transnetv2", "transnet"),
    ]:
        with pytest.raises(MissingDependencyError, match=rf"framepipe\[{extra}\]'$"):
            check_extras({setting: value})
    check_extras(format="jsonl", detector="builtin", quantize=None)  # nothing optional


def test_the_command_line_checks_every_option_it_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new optional choice is a row of the table: the command line checks any option of
    that name before the command runs (here a made-up row for an existing option)."""
    import framepipe.extras

    row = ("a_module_that_is_not_there", "not-there", "missing-extra")
    monkeypatch.setitem(framepipe.extras.EXTRAS, ("kind", "multiview"), row)
    res = CliRunner().invoke(cli, ["info", "--kind", "multiview", "nowhere"])
    _one_line_usage_error(res, "not-there is not installed (needed for --kind multiview)")
    assert "pip install 'framepipe[missing-extra]'" in res.output


FLAGGED = [
    (["-n", "0"], "-n (0) must be >= 1"),
    (["--num-frames", "0"], "-n (0) must be >= 1"),
    (["--fps", "0"], "--fps (0.0) must be > 0"),
    (["--sampler-opt", "fps=0"], "fps (0) must be > 0"),  # given as a sampler option: its name
]


@pytest.mark.parametrize(("args", "line"), FLAGGED, ids=[" ".join(a) for a, _ in FLAGGED])
def test_a_refused_setting_is_named_by_its_flag(
    video: Path, tmp_path: Path, args: list[str], line: str
) -> None:
    """The checks are the library's (its names, ``n``, ``fps``); the command line names the
    flag the user gave the value with."""
    for command in (["sample", str(video), "-o", str(tmp_path / "out")],
                    ["caption", str(video), "-o", str(tmp_path / "r.jsonl")]):  # fmt: skip
        res = CliRunner().invoke(cli, [*command, *args])
        assert res.exit_code == 2 and res.output.strip().splitlines() == [f"Error: {line}"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("3:2", "--decode-actors 3:2: MIN (3) must be <= MAX (2)"),
        ("0", "--decode-actors 0: must be >= 1"),
        ("0:4", "--decode-actors 0:4: MIN (0) must be >= 1"),
        ("x", "--decode-actors x: must be N or MIN:MAX"),
    ],
)
def test_a_bad_pool_size_says_which_bound_is_wrong(value: str, reason: str) -> None:
    """``--decode-actors 3:2`` said ``the pool size ((3, 2)) must be >= 1, and MIN <= MAX``:
    a tuple's repr in double brackets and both rules at once. It names the flag and the
    value as given, and the one rule it breaks."""
    res = CliRunner().invoke(cli, ["sample", "v.mp4", "-o", "out", "--decode-actors", value])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == f"Error: {reason}"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["sample", "{v}", "-o", "{out}", "--workers", "-1"],
            "'--workers': -1 is not in the range",
        ),
        (["sample", "{v}"], "Missing option '-o' / '--output'"),
        (["sampel", "{v}"], "No such command 'sampel'. Did you mean 'sample'?"),
        (["caption", "{v}", "-o", "{out}", "--questions-file", "{empty}"], "holds no question"),
    ],
)
def test_a_setting_clicks_own_parsing_refuses_is_one_line_too(
    video: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    """Values that click's own parsing refuses (a range, a missing option, an unknown
    command, a file the option reads) printed click's usage line and help hint above the
    error: three lines, where the README promises one, as framepipe's own refusals are."""
    empty = tmp_path / "q.txt"
    empty.write_text("\n")
    args = [a.format(v=video, out=tmp_path / "out", empty=empty) for a in args]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0], lines
    assert not (tmp_path / "out").exists()


TYPOS = [
    (["--sampler", "unifrom"], "unknown sampler 'unifrom'", "'uniform'"),
    (["--kind", "vidoe"], "'vidoe' is not one of", "'video'"),
    (["--clips", "shot"], "'shot' is not one of", "'shots'"),
    (["--mode", "center"], "'center' is not one of", "'centers'"),
    (["--overflow", "repeat"], "'repeat' is not one of", "'repeat_last'"),
    (["--sampler-opt", "fsp=1"], "unknown parameter 'fsp'", "'fps'"),
    (["--source-opt", "backnd=pyav"], "unknown source option 'backnd'", "'backend'"),
    (["--sampler", "keyframe", "--sampler-opt", "cut_ratoi=2"], "'cut_ratoi'", "'cut_ratio'"),
    (["--clips", "shots", "--clip-opt", "min_shot=1"], "min_shot", "'min_shot_s'"),
    (["--source-opt", "backend=decrd"], "backend 'decrd' is not one of", "'decord'"),
    (["--source-opt", "background=blak"], "background ('blak')", "'black'"),
]


@pytest.mark.parametrize(("args", "needle", "near"), TYPOS, ids=[" ".join(a) for a, *_ in TYPOS])
def test_a_mistyped_name_is_refused_with_the_name_near_it(
    video: Path, tmp_path: Path, args: list[str], needle: str, near: str
) -> None:
    """A typo in a sampler, kind, clip planner, choice or option name was refused with the
    list of names only (a mistyped command already got 'Did you mean'): the one near it is
    now named, on the same one line."""
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["sample", str(video), "-o", str(out), *args])
    _one_line_usage_error(res, needle)
    assert f"Did you mean {near}?" in res.output
    assert not out.exists()


def test_a_name_near_nothing_gets_no_guess(video: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["sample", str(video), "-o", str(tmp_path), "--sampler", "zzz"])
    _one_line_usage_error(res, "unknown sampler 'zzz'")
    assert "Did you mean" not in res.output


@pytest.mark.parametrize(
    ("args", "near"),
    [
        (["shots", "{v}", "--detector", "builtn"], "'builtin'"),
        (["shots", "{v}", "--opt", "cut_ratoi=3"], "'cut_ratio'"),
        (["caption", "{v}", "-o", "{out}", "--dtype", "flaot32"], "'float32'"),
        (["caption", "{v}", "-o", "{out}", "--backend", "opneai"], "'openai'"),
        (["caption", "{v}", "-o", "{out}", "--format", "josnl"], "'jsonl'"),
    ],
)
def test_every_command_names_the_choice_near_a_mistyped_one(
    video: Path, tmp_path: Path, args: list[str], near: str, no_model: list[str]
) -> None:
    args = [a.format(v=video, out=tmp_path / "r.jsonl") for a in args]
    res = CliRunner().invoke(cli, args)
    _one_line_usage_error(res, f"Did you mean {near}?")
    assert not (tmp_path / "r.jsonl").exists() and no_model == []
