"""Default questions per input kind, used when the user gives none."""

from __future__ import annotations

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
