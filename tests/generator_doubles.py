"""Test doubles of the generator for the runs' tests: answers computed from the frames and
questions they are given (never a model's answer; they describe themselves as random weights,
so their records carry the random-weights note like the tiny model's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from framepipe.errors import GenerationError


@dataclass
class EchoAnswer:
    prompt: str
    answers: list[str]
    generate_s: float
    prompt_tokens: int
    new_tokens: list[int]


def frames_signature(images: Sequence[np.ndarray]) -> str:
    return ",".join(str(round(float(np.asarray(im).mean()), 1)) for im in images)


class EchoGenerator:
    """TEST DOUBLE with the Generator's methods: answers describe the frames it was given."""

    def __init__(self, fail_signature: str | None = None) -> None:
        self.batches: list[int] = []
        self.fail_signature = fail_signature

    def describe(self) -> dict[str, Any]:
        return {
            "id": "test/echo",
            "revision": None,
            "path": None,
            "dtype": "float32",
            "device": "cpu",
            "quantize": None,
            "attn": "eager",
            "random_weights": True,
        }

    def answer(self, requests: Sequence[Any]) -> list[EchoAnswer]:
        self.batches.append(len(requests))
        out = []
        for req in requests:
            sig = frames_signature(req.images)
            if sig == self.fail_signature:
                raise GenerationError("echo: this clip cannot be answered")
            qs = list(req.questions)
            out.append(
                EchoAnswer(
                    prompt=f"{req.system or ''}|{len(req.images)} images|{qs[0]}",
                    answers=[f"{q} => {sig}" for q in qs],
                    generate_s=0.001,
                    prompt_tokens=7,
                    new_tokens=[1] * len(qs),
                )
            )
        return out
