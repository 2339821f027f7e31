"""Ray's own log lines on the terminal of ``framepipe sample|caption --engine ray``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWE] \d+ \d+\] (?:[\w.]+:\d+: )?")
"""A log line of Ray's C++ core (``[2026-01-02 10:11:12,345 E 123 123] core_worker.cc:..``)."""

ENDS_THE_PROCESS = b"The program will terminate"
"""What Ray's core says before it ends this process at once (the cluster's head, its GCS, lost
for 60 s): the one native line that is shown, as the run's error."""

terminal_fd: int | None = None
"""While :func:`native_ray_lines_to_log` pumps stderr: a copy of the file descriptor 2 it
replaced (the terminal, where there is one), for the progress bar to ask whether stderr
is a terminal and how wide it is (descriptor 2 is a pipe then)."""


@contextlib.contextmanager
def native_ray_lines_to_log(engine: str) -> Iterator[None]:
    """On ``--engine ray`` at the default verbosity, keep the log lines Ray's C++ core writes
    to this process's stderr (an error-level line per actor pool: ``has constructor arguments
    in the object store and max_restarts > 0``) off the terminal: they are in the session's
    logs (``python-core-driver-*.log``), and ``-v`` shows them. Everything else written to
    stderr passes as it is written, and so does the line with which Ray ends this process
    (as ``Error: Ray stopped this run: ...``).

    The lines pass through a small child process (:func:`pump`), not a thread: Ray ends the
    process without any clean-up (``QuickExit``), and a thread of it would die with its
    last line unwritten."""
    if engine != "ray" or logging.getLogger("framepipe").getEffectiveLevel() < logging.WARNING:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    code = "from framepipe.cli.ray_logs import pump; pump()"
    try:  # its own session: a Ctrl-C at the terminal is for the run, not for the pump
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
        )
    except OSError:
        os.close(terminal)
        yield
        return
    assert child.stdin is not None
    global terminal_fd
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()
    terminal_fd = terminal
    try:
        yield
    finally:
        sys.stderr.flush()
        terminal_fd = None
        os.dup2(terminal, 2)  # the pipe ends once no process writes to it any more
        os.close(terminal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)  # else it ends with the local Ray that still holds it


def pump(read_fd: int = 0, write_fd: int = 1) -> None:
    """Copy ``read_fd`` to ``write_fd`` as it comes, without Ray's native log lines (those
    but the last one of a process Ray ends: :data:`ENDS_THE_PROCESS`)."""
    held = b""
    for chunk in iter(lambda: os.read(read_fd, 1 << 16), b""):
        *lines, held = (held + chunk).split(b"\n")
        os.write(write_fd, b"".join(shown(ln) for ln in lines))
        if held and not held.startswith(b"["):  # a progress bar's partial line
            os.write(write_fd, held)
            held = b""
    os.write(write_fd, held)


def shown(line: bytes) -> bytes:
    """What of ``line`` reaches the terminal (with its newline)."""
    native = NATIVE_LINE.match(line)
    if native is None:
        return line + b"\n"
    if ENDS_THE_PROCESS in line:
        return b"Error: Ray stopped this run: " + line[native.end() :] + b"\n"
    return b""
