"""Ray's own log lines on the terminal of ``framepipe sample|caption --engine ray``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWE] \d+ \d+\] ")
"""A log line of Ray's C++ core (``[2026-01-02 10:11:12,345 E 123 123] core_worker.cc:..``)."""


@contextlib.contextmanager
def native_ray_lines_to_log(engine: str) -> Iterator[None]:
    """On ``--engine ray`` at the default verbosity, keep the log lines Ray's C++ core writes
    to this process's stderr (an error-level line per actor pool: ``has constructor arguments
    in the object store and max_restarts > 0``) off the terminal: they are in the session's
    logs (``python-core-driver-*.log``), and ``-v`` shows them. Everything else written to
    stderr passes as it is written."""
    if engine != "ray" or logging.getLogger("framepipe").getEffectiveLevel() < logging.WARNING:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        held = b""
        with os.fdopen(read, "rb", buffering=0) as pipe:
            for chunk in iter(lambda: pipe.read(1 << 16), b""):
                *lines, held = (held + chunk).split(b"\n")
                os.write(
                    terminal, b"".join(ln + b"\n" for ln in lines if not NATIVE_LINE.match(ln))
                )
                if held and not held.startswith(b"["):  # a progress bar's partial line
                    os.write(terminal, held)
                    held = b""
        os.write(terminal, held)

    thread = threading.Thread(target=pump, name="framepipe-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # the pipe ends once no process writes to it any more
        thread.join(timeout=0.5)
        if not thread.is_alive():
            os.close(terminal)
