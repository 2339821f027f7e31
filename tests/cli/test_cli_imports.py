"""What a ``framepipe shots`` process imports: the video source and the shot detector, not
the engines, the model code, the other source kinds, the records writers or the detectors it
was not asked for (each costs start-up time on every file a user checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = (
    "framepipe.engine",
    "framepipe.runs",
    "framepipe.answering",
    "framepipe.generate",
    "framepipe.sources.render",
    "framepipe.sources.multiview",
    "framepipe.output",
    "framepipe.shots.transnet",
    "torch",
    "transformers",
)


def test_shots_process_imports_no_engine_model_writer_or_other_source_kind(h264_path: Path) -> None:
    code = (
        "import sys\n"
        "from framepipe.cli import cli\n"
        f"cli.main(['shots', {str(h264_path)!r}], standalone_mode=False)\n"
        f"print('HEAVY', [h for h in {HEAVY!r} if any(m.split('.')[:len(h.split('.'))] "
        "== h.split('.') for m in sys.modules)])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{h264_path}: " in r.stdout and "shot(s)" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []"
