"""Ray's native log lines on an ``--engine ray`` command's terminal (no Ray needed): kept off
at the default verbosity, except the line with which Ray's core ends the process (its head
lost), which must reach the terminal although the process ends without any clean-up."""

from __future__ import annotations

import subprocess
import sys

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
