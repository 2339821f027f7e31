"""The questions asked about a clip: the default question per input kind (used when the
user gives none), and the checks of the user's questions and system prompt."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from framepipe.errors import ConfigError

DEFAULT_QUESTIONS: dict[str, str] = {
    "video": "These images are frames of one video, in order. Describe what happens in the "
    "video in detail.",
    "multiview": "These images are views of one scene taken from different viewpoints. "
    "Describe the scene: its layout, the objects in it and where they are.",
    "render": "These images are renders of one 3D object seen from different viewpoints. "
    "Describe the object: what it is, its shape, colours, materials and parts.",
}


def default_question(kind: str | None) -> str:
    return DEFAULT_QUESTIONS.get(kind or "video", DEFAULT_QUESTIONS["video"])


def check_questions(questions: Sequence[str] | str | None) -> list[str] | None:
    """The questions, stripped; ConfigError for an empty one, TypeError naming what is not
    text (``questions=3``, a list holding a number). None means per-kind defaults."""
    if questions is None:
        return None
    if isinstance(questions, str):
        questions = [questions]
    if not isinstance(questions, Iterable) or isinstance(questions, (bytes, Mapping)):
        raise TypeError(f"questions must be a str or a list of str, not {_name(questions)}")
    out = []
    for k, q in enumerate(questions, 1):
        if not isinstance(q, str):
            raise TypeError(f"question {k} must be a str, not {_name(q)}")
        if not q.strip():
            raise ConfigError(f"question {k} is empty")
        out.append(q.strip())
    if not out:
        raise ConfigError("no question given (leave questions unset for the default ones)")
    return out


def check_system(system: str | None) -> str | None:
    """The system prompt; ConfigError when it is given but empty, TypeError when not text."""
    if system is not None and not isinstance(system, str):
        raise TypeError(f"the system prompt must be a str, not {_name(system)}")
    if system is not None and not system.strip():
        raise ConfigError("the system prompt is empty")
    return system


def _name(value: object) -> str:
    return type(value).__name__
