"""The help says what the options do: the remote-storage options govern remote outputs as
well as inputs, and the top-level help's promise about -o/--output holds for every command."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from framepipe.cli import cli


def _help(*args: str) -> str:
    return " ".join(CliRunner().invoke(cli, [*args, "--help"], terminal_width=300).output.split())


def test_the_storage_options_and_the_cache_say_they_serve_remote_outputs() -> None:
    for command in ("sample", "caption"):
        text = _help(command)
        storage = text.split("--storage-option KEY=VALUE", 1)[1].split("--shard", 1)[0]
        assert "remote inputs and remote outputs (-o s3://..., caption's --frames-dir" in storage
        cache = text.split("--cache-dir DIRECTORY", 1)[1].split("--keep-downloads", 1)[0]
        assert "records of a remote -o (s3://...) wait, in .outputs/" in cache


def test_every_command_that_writes_takes_what_the_top_level_help_says() -> None:
    top = _help()
    assert "make-tiny-model takes its folder as OUT_DIR" in top
    assert "Every command that writes records or a page takes -o/--output" in top
    ctx = click.Context(cli)
    assert isinstance(cli, click.Group)
    tiny = cli.get_command(ctx, "make-tiny-model")
    assert tiny is not None
    assert [p.name for p in tiny.params if isinstance(p, click.Argument)] == ["out_dir"]
    assert not any("--output" in p.opts for p in tiny.params)
    assert "OUT_DIR" in _help("make-tiny-model")


def test_sample_help_names_the_manifest_of_each_format() -> None:
    text = _help("sample")
    description = text.split("Options:", 1)[0]
    assert "DIR/manifest.jsonl (DIR/manifest.parquet with --format parquet)" in description
    output = text.split("-o, --output DIRECTORY", 1)[1].split("--format", 1)[0]
    assert "manifest.jsonl (manifest.parquet with" in output


def test_quiet_help_says_what_it_leaves_out_and_what_it_keeps() -> None:
    quiet = _help().split("--quiet", 1)[1].split("-h, --help", 1)[0]
    assert "Only errors on stderr: no notes, warnings, summaries or progress bars" in quiet
    assert "stdout is its output and stays" in quiet


def test_a_mistyped_command_is_refused_with_the_commands_near_it() -> None:
    res = CliRunner().invoke(cli, ["sampel", "v.mp4"])
    assert res.exit_code == 2
    assert "No such command 'sampel'. Did you mean 'sample'?" in res.stderr
    res = CliRunner().invoke(cli, ["shot", "v.mp4"])
    assert "Did you mean 'shots'?" in res.stderr
    res = CliRunner().invoke(cli, ["xyz"])
    assert res.exit_code == 2 and "No such command 'xyz'." in res.stderr
    assert "Did you mean" not in res.stderr


def test_help_is_a_command_too() -> None:
    res = CliRunner().invoke(cli, ["help"])
    assert res.exit_code == 0 and res.stdout == CliRunner().invoke(cli, ["--help"]).stdout
    res = CliRunner().invoke(cli, ["help", "sample"], terminal_width=300)
    assert res.exit_code == 0 and res.stdout.startswith("Usage: cli sample [OPTIONS]")
    assert "--image-format" in res.stdout
    res = CliRunner().invoke(cli, ["help", "sampel"])
    assert res.exit_code == 2 and "Did you mean 'sample'?" in res.stderr


def test_the_version_is_the_package_version() -> None:
    from importlib.metadata import version

    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and res.stdout == f"framepipe, version {version('framepipe')}\n"


def test_a_mistyped_option_is_refused_with_the_option_it_spells() -> None:
    """An underscore for a dash, or a short flag written long, names that one option (click's
    own guess by letters offered ``--kind`` for ``--n``)."""
    for typed, meant in (("--n", "--num-frames"), ("--num_frames", "--num-frames")):
        res = CliRunner().invoke(cli, ["sample", "v.mp4", typed, "8", "-o", "out"])
        assert res.exit_code == 2
        assert f"No such option '{typed}'. Did you mean '{meant}'?" in res.stderr, res.stderr
    res = CliRunner().invoke(cli, ["caption", "v.mp4", "--max_new_tokens", "8", "-o", "o.jsonl"])
    assert "Did you mean '--max-new-tokens'?" in res.stderr
    res = CliRunner().invoke(cli, ["sample", "v.mp4", "--frames", "8", "-o", "out"])
    assert "--num-frames" in res.stderr  # click's guesses by letters where nothing is spelled


def test_a_top_level_option_given_after_the_command_says_where_it_goes() -> None:
    """``framepipe sample ... --quiet`` (or ``-v``) was refused as an unknown option, and
    ``caption ... --quiet`` guessed ``--question``: it is framepipe's own option, and the
    one line now says to give it before the command."""
    for command, typed, meant in (
        ("sample", "--quiet", "--quiet"),
        ("caption", "--quiet", "--quiet"),
        ("info", "-v", "-v"),
        ("sample", "--quite", "--quiet"),
    ):
        res = CliRunner().invoke(cli, [command, "v.mp4", typed, "-o", "out"])
        assert res.exit_code == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: No such option '{typed}'"), lines
        assert f"given before the command: framepipe {meant} {command} ..." in lines[0]


def test_a_mistyped_option_is_never_offered_an_old_hidden_spelling() -> None:
    """``sample --quite`` guessed ``--out``, ``sample --outt`` offered ``--out`` beside
    ``--output``: old spellings are hidden from --help, and not offered as what was meant."""
    res = CliRunner().invoke(cli, ["sample", "v.mp4", "--outt", "out"])
    assert res.exit_code == 2
    assert "No such option '--outt'. Did you mean '--output'?" in res.stderr, res.stderr
    res = CliRunner().invoke(cli, ["sample", "v.mp4", "--manifest-formt", "jsonl", "-o", "o"])
    assert "'--manifest-format'" not in res.stderr, res.stderr


def test_an_existing_folder_as_a_caption_output_says_how_to_mean_part_files(
    tmp_path: Path,
) -> None:
    """``caption ... -o results`` with a folder ``results`` was refused with click's
    ``File 'results' is a directory.`` only; the line now says how to ask for its part
    files (``results/``)."""
    (tmp_path / "results").mkdir()
    res = CliRunner().invoke(cli, ["caption", "v.mp4", "-o", str(tmp_path / "results")])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a directory" in lines[0], lines
    assert lines[0].endswith(f"end it with '/' for a folder of part files: {tmp_path}/results/")


def test_caption_help_lists_do_sample_with_the_other_decoding_options() -> None:
    """``--do-sample`` was listed among the model's options, after ``--offline`` and before
    the server's, far from ``--temperature``, ``--top-p`` and ``--seed`` that only apply
    with it: it is listed with the decoding options, just before them."""
    out = CliRunner().invoke(cli, ["caption", "--help"], terminal_width=300).output
    names = [ln.split()[0].strip(",") for ln in out.splitlines() if ln.startswith("  --")]
    decoding = ["--do-sample", "--batch-size", "--max-new-tokens", "--temperature"]
    start = names.index("--do-sample")
    assert names[start : start + 4] == decoding
    assert names.index("--server-wait") < start


def test_cache_dir_help_names_every_place_the_default_is_taken_from() -> None:
    """The default cache is ``$FRAMEPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/framepipe/remote``
    (``~/.cache`` when XDG_CACHE_HOME is unset), as the README says; the help named only the
    first and ``~/.cache``, so a user with XDG_CACHE_HOME set looked for downloads in the
    wrong folder."""
    for command in ("sample", "caption"):
        cache = _help(command).split("--cache-dir DIRECTORY", 1)[1].split("--keep-downloads")[0]
        assert "$FRAMEPIPE_CACHE_DIR, else $XDG_CACHE_HOME/framepipe/remote" in cache


def _examples(text: str) -> list[list[str]]:
    import shlex

    assert "Examples:" in text
    lines = text.split("Examples:", 1)[1].splitlines()
    return [shlex.split(line) for line in lines if line.strip().startswith("framepipe ")]


def test_every_help_ends_with_examples_the_command_takes() -> None:
    """No --help showed an example command line (the README had them, the terminal did
    not): each command's help, and the top-level one, now ends with examples, whose every
    option is one that command has."""
    ctx = click.Context(cli)
    assert isinstance(cli, click.Group)
    names = [n for n in cli.list_commands(ctx) if n != "help"]
    top = CliRunner().invoke(cli, ["--help"], terminal_width=300).output
    tried = {line[1] for line in _examples(top)}
    assert {"sample", "caption"} <= tried
    for name in names:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        text = CliRunner().invoke(cli, [name, "--help"], terminal_width=300).output
        found = _examples(text)
        assert found and any(line[1] == name for line in found), name
        for line in found + [t for t in _examples(top) if t[1] == name]:
            sub = cli.get_command(ctx, line[1])
            assert sub is not None, line
            flags = {o for p in sub.params for o in (*p.opts, *p.secondary_opts)}
            for token in line[2:]:
                if token.startswith("-"):
                    assert token.split("=", 1)[0] in flags, (line, token)


def test_every_key_value_option_says_how_its_values_are_read_with_an_example() -> None:
    """--sampler-opt said only 'Extra sampler parameter', --source-opt and --clip-opt gave
    no word of their values being JSON (how to pass background=[0,0,0] or a number): only
    --storage-option did. Every KEY=VALUE option's help now says it, with an example."""
    ctx = click.Context(cli)
    assert isinstance(cli, click.Group)
    seen = set()
    for name in ("info", "sample", "caption", "shots"):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        sub = click.Context(cmd, info_name=name, parent=ctx)
        for param in cmd.params:
            if isinstance(param, click.Option) and param.metavar == "KEY=VALUE":
                record = param.get_help_record(sub)
                assert record is not None, param.opts
                text = " ".join(record[1].split())
                assert "values parsed as JSON when they can be" in text, (name, param.opts)
                assert "e.g. " in text and "=" in text.split("e.g. ", 1)[1], (name, param.opts)
                seen.add(param.opts[0])
    assert seen == {"--sampler-opt", "--clip-opt", "--source-opt", "--storage-option", "--opt"}
