import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from framepipe.cli import cli

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_info_json_reports_each_source_and_failures(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    result = CliRunner().invoke(
        cli, ["info", "--json", str(SAMPLES / "shots.mp4"), str(SAMPLES / "scene_cubes"), str(bad)]
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    rows = json.loads(result.stdout)
    video, scene, failed = rows
    assert video["kind"] == "video" and video["num_frames"] == 144 and video["fps"] == "24/1"
    assert scene["kind"] == "multiview" and scene["num_views"] == 16
    assert failed["status"] == "failed" and failed["error"].startswith(str(bad))
    assert f"error: {bad}" in result.stderr


def test_info_table() -> None:
    result = CliRunner().invoke(cli, ["info", str(SAMPLES / "shots.mp4")])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:3] == ["source", "kind", "num_frames"]
    assert row.split()[1:3] == ["video", "144"]


def test_info_and_shots_read_remote_uris_and_name_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remote_servers import served_videos

    monkeypatch.setenv("FRAMEPIPE_CACHE_DIR", str(tmp_path / "cache"))
    with served_videos(tmp_path / "www") as (_, url, _):
        good, missing, bad = f"{url}/b.mp4", f"{url}/nope.mp4", f"{url}/bad.mp4"
        for command in ("info", "shots"):
            result = CliRunner().invoke(cli, [command, "--json", good, missing, bad])
            assert result.exit_code == 1, result.output
            assert "Traceback" not in result.output
            ok, gone, broken = json.loads(result.stdout)
            assert ok["source"] == good and ok["num_frames"] == 20
            assert gone == {
                "source": missing,
                "status": "failed",
                "error": f"{missing}: no such remote object",
            }
            assert broken["source"] == bad and broken["error"].startswith(f"{bad}: ")
            assert str(tmp_path / "cache") not in result.output  # never the cached copy


def test_info_and_shots_tables_show_a_name_with_a_line_break_on_one_row(tmp_path: Path) -> None:
    video = tmp_path / "two\nlines\x1b[31m.mp4"  # a newline and a terminal escape in a name
    video.write_bytes((SAMPLES / "shots.mp4").read_bytes())
    result = CliRunner().invoke(cli, ["info", str(video)])
    assert result.exit_code == 0, result.output
    _, row = result.stdout.splitlines()
    assert row.startswith(f"{tmp_path}/two\\nlines\\x1b[31m.mp4 ") and "\x1b" not in row
    result = CliRunner().invoke(cli, ["shots", str(video)])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path}/two\\nlines\\x1b[31m.mp4: " in result.stdout
