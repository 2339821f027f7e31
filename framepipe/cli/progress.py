"""The progress bar of a ``sample`` or ``caption`` run (clips/s, ETA, failures), and the
run's Ctrl-C and SIGTERM: what was written stays, one line says how much, and the same
command resumes."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import TYPE_CHECKING, Any

import click

from framepipe.cli import ray_logs
from framepipe.cli.common import chatty, note
from framepipe.utils import shown_text

if TYPE_CHECKING:
    from framepipe.config import SampleConfig
    from framepipe.discovery import Input, Skipped
    from framepipe.types import ClipResult


NARROW_COLUMNS = 60
"""A terminal narrower than this gets the short bar (:func:`bar_format`)."""


def bar_format(columns: int | None, *, total: bool) -> str | None:
    """tqdm's format of the bar for a terminal ``columns`` wide (``total``: whether the bar
    has one): tqdm's own (None) where it fits; in a narrow terminal the count and the
    failures first, then a short bar, and no timings (tqdm's own line would be cut in the
    middle of a number, the failures lost)."""
    if columns is None or columns >= NARROW_COLUMNS:
        return None
    if not total:
        return "{desc}: {n_fmt} {unit}{postfix}"
    return "{desc}: {n_fmt}/{total_fmt}{postfix} {percentage:3.0f}%|{bar}|"


def _stderr_fd() -> int:
    """The descriptor that stands for stderr's terminal: the one Ray's log pump replaced
    (:data:`~framepipe.cli.ray_logs.terminal_fd`; stderr is its pipe then), else stderr's."""
    pumped = ray_logs.terminal_fd
    return pumped if pumped is not None else sys.stderr.fileno()


def _stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (with Ray's log pump, whether the one it replaced is)."""
    pumped = ray_logs.terminal_fd
    return os.isatty(pumped) if pumped is not None else sys.stderr.isatty()


def _columns() -> int | None:
    try:
        return os.get_terminal_size(_stderr_fd()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return None


class Progress:
    """A tqdm bar of clips with clips/s and ETA (a total only when ``whole``: one clip per
    input). It appears with the first clip, so model loading does not count in the rate.
    Its methods are a run's ``on_input``, ``on_record`` and ``on_skip``."""

    def __init__(self, desc: str, *, whole: bool) -> None:
        self.desc = desc
        self.whole = whole
        self.total: int | None = None
        self.bar: Any = None
        self.written = 0
        self.failed = 0

    def on_input(self, inputs: Sequence[Input] | Iterator[Input], notes: Sequence[Skipped]) -> None:
        if not logging.getLogger("framepipe.inputs").isEnabledFor(logging.INFO):
            for n in notes:  # else the library's own line (-v) says it, once
                note(f"note: skipping {n.path}: {n.reason}")
        # a streamed manifest has no len(): no total
        self.total = len(inputs) if self.whole and isinstance(inputs, Sized) else None

    def _ensure(self) -> Any:
        if self.bar is None:
            from tqdm import tqdm

            # None: off when stderr is no terminal; stderr piped through Ray's log pump:
            # whether the stderr behind the pump is one
            pumped = ray_logs.terminal_fd is not None
            disable = None if chatty() else True
            if pumped:
                disable = not (chatty() and _stderr_is_terminal())
            columns = _columns()
            self.bar = tqdm(
                total=self.total,
                unit="clip",
                desc=self.desc,
                file=sys.stderr,
                disable=disable,
                dynamic_ncols=not pumped,
                ncols=columns if pumped else None,
                bar_format=bar_format(columns, total=self.total is not None),
            )
        return self.bar

    def on_skip(self, count: int) -> None:
        bar = self._ensure()
        if bar.total is not None:
            bar.total = max(bar.n, bar.total - count)
            bar.refresh()

    def on_record(self, rec: ClipResult) -> None:
        bar = self._ensure()
        self.written += 1
        if rec.status != "ok":
            self.failed += 1
            bar.set_postfix_str(f"{self.failed} failed", refresh=False)
        bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler at a job's time limit): it stops a run the way
    Ctrl-C does, so what is written stays and the same command resumes."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends the process at once
    raise Terminated


def run_with_progress(
    run: Callable[..., Any], config: SampleConfig, written_to: object, rest: str, **kw: Any
) -> Any:
    """``run(**kw)`` (``sample`` or ``caption``, with ``config``) with a :class:`Progress`
    bar of its clips, keeping no records in memory (the output has them); Ctrl-C says how
    many clips were written to ``written_to`` and exits with status 130 (``rest``: what the
    same command does again), SIGTERM the same with status 143."""
    whole = config.clips == "whole" and config.clip_seconds is None
    progress = Progress(run.__name__, whole=whole)
    try:
        before: Any = signal.signal(signal.SIGTERM, _on_sigterm)
        installed = True
    except ValueError:  # not the main thread (an embedding application's): its own handler
        installed = False
    try:
        return run(
            keep_records=False,
            on_input=progress.on_input,
            on_record=progress.on_record,
            on_skip=progress.on_skip,
            **kw,
        )
    except KeyboardInterrupt as exc:
        # in a terminal, a line of its own after its ^C (a bar shown ends its own line)
        shown = progress.bar is not None and not progress.bar.disable
        lead = "\n" if _stderr_is_terminal() and not shown else ""
        progress.close()
        how, code = (
            ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        )
        click.echo(
            f"{lead}{how}: {progress.written} clip(s) written to {shown_text(str(written_to))}; "
            "run the same "
            f"command again to {rest}",
            err=True,
        )
        sys.exit(code)
    finally:
        progress.close()
        if installed:
            signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)
