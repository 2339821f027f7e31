"""Ctrl-C and SIGTERM are for the main process: a decoder process ignores them from the
moment it begins, even while it still imports its modules (seconds, with torch), where it
used to die of a KeyboardInterrupt and print its traceback over the user's terminal. A
decoder that stopped the run (its "stop" message, then its exit) is not handed the next
input (a Ray read actor gets more inputs before the driver stops it)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import engine_plugins
import pytest

from framepipe.config import SampleConfig
from framepipe.discovery import discover
from framepipe.engine.supervisor import DecoderProcess
from framepipe.engine.worker import WorkerSetup, WorkItem
from framepipe.errors import StopRunError


def test_a_decoder_still_starting_survives_ctrl_c_and_sigterm() -> None:
    setup = WorkerSetup(cfg=SampleConfig(n=2), prepare=engine_plugins.SlowToSend(2.0))  # type: ignore[arg-type]
    decoder = DecoderProcess(setup, decode_timeout_s=None)
    decoder.start()
    try:
        proc = decoder.process
        time.sleep(0.5)  # started, still unpickling its setup
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(2.5)  # past its start: the signals were held back, then ignored
        assert proc.is_alive() and proc.exitcode is None
    finally:
        decoder.close()


def test_the_input_after_an_error_that_stops_the_run_does_not_fail_as_a_dead_decoder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The next input went to the decoder that had ended after its "stop": a warning, and
    a failed record, "the decoder process exited with status 0", naming a good input."""
    for k in (1, 2):
        (tmp_path / f"stop{k}.stall").write_bytes(b"")
    items, _ = discover([tmp_path])
    setup = WorkerSetup(cfg=SampleConfig(n=2), imports=("engine_plugins",))
    decoder = DecoderProcess(setup, None)
    try:
        for k, item in enumerate(items):
            with pytest.raises(StopRunError, match=f"stop{k + 1}.stall: every input would fail"):
                list(decoder.run(WorkItem(k, item)))
    finally:
        decoder.close()
    assert "exited with status" not in caplog.text
