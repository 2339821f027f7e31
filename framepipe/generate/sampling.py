"""Seeded sampling that does not depend on the batch: each answer draws from a random stream
of its own, seeded from the run's seed, the clip's identity and the question's index
(:func:`~framepipe.generate.config.answer_seed`), so that a clip's sampled answers are the
same whatever clips share its batch, whatever the batch size, on every engine and in a
resumed run. Imported where a model answers (it imports torch and transformers).

In process, :class:`RowSampler` is a logits processor (transformers' public API) that
applies the temperature, top-k and top-p warpers transformers itself would apply, in its
order, and draws each row's token with that row's own ``torch.Generator``; ``generate`` then
runs greedy and picks the drawn token. The uniform numbers are drawn on the CPU (the same
streams on every device) and turned into tokens on the model's device (inverse CDF), so a
step costs no copy of the distribution. Greedy decoding never builds one. The ``openai``
backend sends the same per-answer seed with each request.

Beam search with sampling is refused when seeded: it draws its beams jointly, not per row
(see :class:`~framepipe.generate.config.GenerationSettings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from framepipe.generate.config import GenerationSettings, answer_seed


def row_sampler(s: GenerationSettings, rows: Sequence[tuple[str, int]]) -> LogitsProcessorList:
    """The logits processors that sample each of ``rows`` (the identity of a request and the
    index of one of its questions) from its own stream (:func:`answer_seed`), with
    ``generate`` run greedy."""
    assert s.seed is not None, "seeded sampling only"
    seeds = [answer_seed(s.seed, ident, q) for ident, q in rows]
    return LogitsProcessorList([RowSampler(s, seeds)])


class RowSampler(LogitsProcessor):
    """Temperature, top-k and top-p as transformers applies them when sampling, then one
    draw per row from the row's own generator; the scores it returns keep only the drawn
    token (greedy decoding then picks it)."""

    def __init__(self, s: GenerationSettings, seeds: Sequence[int]) -> None:
        self.warpers: list[Any] = []
        if s.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(s.temperature))
        if s.top_k:
            self.warpers.append(TopKLogitsWarper(top_k=s.top_k))
        if s.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=s.top_p))
        self.generators = [torch.Generator().manual_seed(int(x)) for x in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows for {len(self.generators)} seeds")
        for w in self.warpers:
            scores = w(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        cdf = probs.cumsum(dim=-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        target = (u.to(cdf.device, cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
        # the first token whose cumulative probability exceeds the draw: never one of zero
        drawn = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, drawn, 0.0)
