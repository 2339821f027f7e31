"""What the ``openai`` backend sends for one question about a clip: the chat messages (a user
message with the clip's frames as ``image_url`` parts, lossless PNG data URLs encoded where
the clip was decoded, then the question; each source's label before its images) and the
generation parameters as the OpenAI API takes them (:class:`APISettings`)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from framepipe.errors import ConfigError
from framepipe.generate.config import GenerationSettings, Prepared, Request, answer_seed


@dataclass
class APISettings(GenerationSettings):
    """:class:`GenerationSettings` as the OpenAI API takes them: records and resume keys name
    what is sent (no ``top_k``, beams or repetition penalty)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [
            f"--{name.replace('_', '-')} ({value})"
            for name, value in (
                ("num_beams", self.num_beams),
                ("repetition_penalty", self.repetition_penalty),
            )
            if value != 1
        ]
        if given:  # named as given: only those set away from 1
            has, them = ("has", "it") if len(given) == 1 else ("have", "them")
            raise ConfigError(
                f"{' and '.join(given)} {has} no OpenAI API equivalent (--backend openai): "
                f"leave {them} at 1"
            )

    def to_json(self) -> dict[str, Any]:
        skip = ("top_k", "num_beams", "repetition_penalty")
        return {k: v for k, v in super().to_json().items() if k not in skip}

    def body(self, r: Request, question: int) -> dict[str, Any]:
        """The generation parameters of question ``question`` of ``r``."""
        if not self.do_sample:
            return {"max_tokens": self.max_new_tokens, "temperature": 0.0}
        out = {"max_tokens": self.max_new_tokens, "temperature": self.temperature}
        out["top_p"] = self.top_p
        if self.seed is None:
            return out
        return {**out, "seed": answer_seed(self.seed, r.identity(), question)}


def encode_images(images: Sequence[np.ndarray]) -> Prepared:
    """Frames as PNG data URLs (lossless); run where clips are decoded."""
    from PIL import Image

    urls = []
    for f in images:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(f)).save(buf, format="PNG", compress_level=1)
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return Prepared(len(urls), urls)


def chat_messages(r: Request, k: int) -> tuple[list[dict[str, Any]], int]:
    """The messages of question ``k`` about ``r`` and the number of images they hold."""
    urls = (r.images if isinstance(r.images, Prepared) else encode_images(r.images)).data
    parts = iter({"type": "image_url", "image_url": {"url": u}} for u in urls)
    content: list[dict[str, Any]] = []
    for seg in r.segments or ():  # each source's label, then its images
        content += [
            {"type": "text", "text": seg.text},
            *(next(parts) for _ in range(seg.num_images)),
        ]
    content += [*parts, {"type": "text", "text": r.questions[k]}]
    system = [] if r.system is None else [{"role": "system", "content": r.system}]
    return [*system, {"role": "user", "content": content}], len(urls)
