"""Ray's native log lines on an ``--engine ray`` command's terminal (no Ray needed): kept off
at the default verbosity, except the line with which Ray's core ends the process (its head
lost), which must reach the terminal although the process ends without any clean-up; the
progress bar still shows in a terminal (stderr is the pump's pipe then)."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios

CODE = """
import os
from framepipe.cli.ray_logs import native_ray_lines_to_log
with native_ray_lines_to_log("ray"):
    os.write(2, b"[2026-12-07 12:11:27,920 E 7 7] core_worker.cc:2465: Actor with class name: "
                b"'MapWorker' has constructor arguments in the object store\\n")
    os.write(2, b"interrupted: 3 clip(s) written\\n")
    os.write(2, b"[2026-12-07 12:12:37,577 E 7 9] rpc_client.h:204: Failed to connect to GCS "
                b"within 60 seconds. GCS may have been killed. The program will terminate\\n")
    os._exit(1)  # as Ray's core does then (QuickExit): no clean-up
"""


def test_the_line_with_which_ray_ends_the_process_reaches_the_terminal() -> None:
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "interrupted: 3 clip(s) written",
        "Error: Ray stopped this run: Failed to connect to GCS within 60 seconds. "
        "GCS may have been killed. The program will terminate",
    ]


BAR = """
import types
from framepipe.cli.progress import Progress
from framepipe.cli.ray_logs import native_ray_lines_to_log
with native_ray_lines_to_log("ray"):
    progress = Progress("sample", whole=True)
    progress.on_input([types.SimpleNamespace()] * 3, [])
    for _ in range(3):
        progress.on_record(types.SimpleNamespace(status="ok"))
    progress.close()
"""


def _in_a_terminal(code: str, columns: int = 70) -> tuple[int, str]:
    """Run ``code`` with its stderr a terminal ``columns`` wide; its exit status and what
    it wrote there."""
    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=side, stdout=subprocess.DEVNULL)
    os.close(side)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: every process holding the terminal has ended
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return proc.wait(timeout=60), out.decode()


def test_the_progress_bar_of_a_ray_run_shows_in_a_terminal_as_wide_as_it() -> None:
    """The pump's pipe in place of stderr is no terminal: tqdm had hidden the bar."""
    status, out = _in_a_terminal(BAR)
    assert status == 0
    lines = [ln for ln in re.split(r"[\r\n]+", out) if ln.strip()]
    assert lines and lines[-1].startswith("sample: 100%") and "3/3" in lines[-1]
    assert all(len(ln) <= 70 for ln in lines)


CTRL_C = """
from framepipe.cli.progress import run_with_progress
from framepipe.cli.ray_logs import native_ray_lines_to_log
from framepipe.config import SampleConfig
def sample(**kw):
    raise KeyboardInterrupt  # Ctrl-C while Ray starts, before the first clip
with native_ray_lines_to_log("ray"):
    run_with_progress(sample, SampleConfig(n=2), "out", "do the rest")
"""


def test_ctrl_c_before_the_first_clip_of_a_ray_run_says_so_on_a_line_of_its_own() -> None:
    """The terminal's ^C stays on the line where it was typed: the message went after it."""
    status, out = _in_a_terminal(CTRL_C)
    assert status == 130
    assert out.startswith("\r\ninterrupted: 0 clip(s) written to out;"), out
