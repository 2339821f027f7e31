"""The progress bar of a run in a terminal: in a narrow one (40 columns) it keeps the count
and the failures whole instead of tqdm's line cut in the middle of a number."""

from __future__ import annotations

import io
import logging
import os
import types

import pytest

from framepipe.cli.common import setup_logging
from framepipe.cli.progress import Progress


class _Terminal(io.StringIO):
    """A terminal's stderr (its size comes from the patched ``os.get_terminal_size``)."""

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 2


@pytest.mark.parametrize("whole", [True, False])
def test_a_40_column_terminal_shows_the_count_and_the_failures_whole(
    monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((40, 24)))
    setup_logging(logging.WARNING)
    progress = Progress("caption", whole=whole)
    progress.on_input([types.SimpleNamespace()] * 2300, [])  # type: ignore[list-item]
    for k in range(1400):
        status = "failed" if k < 300 else "ok"
        progress.on_record(types.SimpleNamespace(status=status))  # type: ignore[arg-type]
    progress.close()
    last = terminal.getvalue().rstrip("\n").split("\r")[-1]
    assert len(last) < 40, last
    assert ("1400/2300, 300 failed" if whole else "1400 clip, 300 failed") in last, last
