"""``framepipe sample`` on bad video input: failed records, exit 1, the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import media
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from framepipe.cli import cli


def _records(out: Path) -> dict[str, dict[str, object]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {Path(r["source"]).name: r for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def bad_dir(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad inputs")
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is a text file, not a video\n" * 10, encoding="utf-8")
    media.audio_only(d / "audio only.mp4")
    media.truncated_copy(video_dir / "h264.mp4", d / "truncated.mp4", 0.5)
    (d / "one frame.mp4").write_bytes((video_dir / "one.mp4").read_bytes())
    (d / "vidéo ünï 日本.mp4").write_bytes((video_dir / "h264.mp4").read_bytes())
    (d / "b-frames.avi").write_bytes((video_dir / "mpeg4.avi").read_bytes())
    return d


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_sample_bad_inputs_fail_alone(bad_dir: Path, tmp_path: Path, backend: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["sample", str(bad_dir), "-n", "4", "-o", str(out), "--source-opt", f"backend={backend}"],
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    recs = _records(out)
    failed = {name: r for name, r in recs.items() if r["status"] == "failed"}
    assert set(failed) == {"zero.mp4", "text.mp4", "audio only.mp4", "truncated.mp4"}
    for name, rec in failed.items():
        err = str(rec["error"])
        assert "\n" not in err and name in err
        # the message is on stderr, one line each
        assert f"{name}:" in result.output
    assert "empty file" in str(failed["zero.mp4"]["error"])
    assert "no video stream" in str(failed["audio only.mp4"]["error"])
    # the good ones ran to the end, with exact frames
    ok = {name: r for name, r in recs.items() if r["status"] == "ok"}
    assert set(ok) == {"one frame.mp4", "vidéo ünï 日本.mp4", "b-frames.avi"}
    assert ok["one frame.mp4"]["indices"] == [0, 0, 0, 0]
    for name in ("vidéo ünï 日本.mp4", "b-frames.avi"):
        rec = ok[name]
        idx = rec["indices"]
        assert isinstance(idx, list) and len(idx) == 4
        frames = rec["frames"]
        assert isinstance(frames, list)
        shown = [media.read_index(np.asarray(Image.open(out / f))) for f in frames]
        assert shown == idx


def test_sample_bad_source_option_fails_with_one_line(h264_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["sample", str(h264_path), "-o", str(tmp_path / "o"), "--source-opt", "backend=nope"],
    )
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "backend 'nope'" in result.output
