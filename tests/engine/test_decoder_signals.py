"""Ctrl-C and SIGTERM are for the main process: a decoder process ignores them from the
moment it begins, even while it still imports its modules (seconds, with torch), where it
used to die of a KeyboardInterrupt and print its traceback over the user's terminal."""

from __future__ import annotations

import os
import signal
import time

import engine_plugins

from framepipe.config import SampleConfig
from framepipe.engine.supervisor import DecoderProcess
from framepipe.engine.worker import WorkerSetup


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
