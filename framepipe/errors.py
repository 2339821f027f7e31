"""The exceptions framepipe raises; every one derives from :class:`FramepipeError`.

An error that concerns one input (a file that will not decode, a scene with too few views)
is caught per clip by the pipeline and written as a ``failed`` record; the run goes on. An
error in the configuration (a bad option, a model that cannot be loaded) stops the run
before any heavy work. Messages are one line and name the file or value that is wrong.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import warnings
from collections.abc import Iterable, Iterator

_log = logging.getLogger("framepipe.warnings")


class FramepipeError(Exception):
    """Root of every error framepipe raises on purpose."""


class ConfigError(FramepipeError, ValueError):
    """An option or argument is invalid (names the option and the bad value)."""


class MissingDependencyError(FramepipeError, ImportError):
    """An optional dependency is not installed; the message says which extra provides it."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        hint = f"pip install 'framepipe[{extra}]'" if extra else f"pip install {package}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{what}: {hint}")
        self.package = package
        self.extra = extra


class SourceError(FramepipeError):
    """An input cannot be opened or read. ``path`` names the file."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class UnsupportedInputError(SourceError):
    """The input is not a kind framepipe can read (not a video, scene or 3D model)."""


class DecodeError(SourceError):
    """The input opened but the requested frames could not be decoded."""


class DecodeTimeoutError(DecodeError):
    """A decoder did not return within the time limit and was stopped."""


class SamplingError(FramepipeError, ValueError):
    """A sampler cannot choose frames with the given settings (e.g. n larger than the clip)."""


class PromptError(ConfigError):
    """A prompt cannot be built, or does not fit the model's context window: a setting of
    the run (its questions, system prompt, n) refused before any work, or a manifest row's
    questions refused for that row's clips."""


class ModelLoadError(FramepipeError):
    """A model cannot be loaded (missing weights, offline hub, wrong architecture)."""


class GenerationError(FramepipeError):
    """Generation failed for a batch of clips."""


class StopRunError(FramepipeError):
    """An error every later clip would hit too (a server that refuses every request for the
    same reason, a GPU left unusable by a CUDA error): the run stops with its one line, what
    was written stays, and the same command run again resumes."""


class OutputError(FramepipeError):
    """An output path cannot be written or an existing output cannot be read."""


class AlreadyThereError(OutputError):
    """An output is already there and is replaced only on request (``overwrite``); the
    command line names its own flag (``--overwrite``)."""

    def __init__(self, path: object, what: str) -> None:
        super().__init__(f"{path}: {what} is already there (pass overwrite=True)")
        self.path = str(path)
        self.what = what


def one_line_error(exc: BaseException, path: object = None) -> str:
    """``exc`` as one line, starting with ``path`` when given and not already named
    (framepipe's own errors about an input name their file themselves)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, FramepipeError):
        msg = text or type(exc).__name__
    else:
        msg = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if path is not None and str(path) not in msg:
        msg = f"{path}: {msg}"
    return msg


@contextlib.contextmanager
def captured_warnings(source: object) -> Iterator[None]:
    """Run the body with Python warnings (numpy's ``RuntimeWarning: invalid value ...``, a
    library's ``UserWarning``) captured instead of printed: each distinct one is logged at
    DEBUG, naming ``source``. A bad input's arithmetic warnings are not the user's business
    on stderr (its failed record, if any, says what went wrong); ``-vv`` shows them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield
    seen: set[tuple[str, str]] = set()
    for w in caught:
        what = (w.category.__name__, str(w.message))
        if what in seen:
            continue
        seen.add(what)
        where = f"{os.path.basename(w.filename)}:{w.lineno}"
        _log.debug("%s: %s: %s (%s)", source, what[0], " ".join(what[1].split()), where)


def check_fields(cls: type, given: Iterable[object], what: str) -> None:
    """A one-line ConfigError when ``given`` (a dict's keys meant for the dataclass ``cls``,
    e.g. ``sample={"frames": 8}``) holds a name that is not one of ``cls``'s fields."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(given) - names))
    if unknown:
        raise ConfigError(
            f"{what}: {cls.__name__} has no field {unknown[0]!r} "
            f"(fields: {', '.join(sorted(names))})"
        )


def near_name(typed: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The one of ``known`` that ``typed`` (not one of them) nearly spells, or None."""
    known = list(known)
    if typed in known:
        return None
    near = difflib.get_close_matches(typed, known, n=1, cutoff=cutoff)
    return near[0] if near else None


def did_you_mean(given: Iterable[object], choices: Iterable[object], after: str = ".") -> str:
    """``. Did you mean 'uniform'?`` (``after``, then the guess) for the names of ``given``
    (a mistyped sampler, kind, option) that are near one of ``choices``, to end a refusal's
    message; ``""`` when none is near (a name that is not a typo gets no guess)."""
    known = [str(c) for c in choices]
    near = list(dict.fromkeys(m for g in given if (m := near_name(str(g), known)) is not None))
    return f"{after} Did you mean {' or '.join(repr(m) for m in near)}?" if near else ""
