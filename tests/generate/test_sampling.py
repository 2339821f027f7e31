"""Seeded sampling (framepipe/generate/sampling.py): each row draws from the distribution
transformers' own warpers make (temperature, top-k, top-p), with its own stream."""

from __future__ import annotations

import torch

from framepipe.generate import GenerationSettings
from framepipe.generate.config import answer_seed
from framepipe.generate.sampling import RowSampler


def test_each_row_draws_from_the_warped_distribution_with_its_own_stream() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    s = GenerationSettings(do_sample=True, temperature=0.8, top_k=3, top_p=0.95)
    n = 20000
    scores = RowSampler(s, list(range(n)))(None, logits.repeat(n, 1))
    drawn = scores.argmax(-1)
    assert torch.isinf(scores).sum() == n * 4  # one token left per row: greedy picks it
    top = torch.softmax(logits[0, [0, 1, 4]] / 0.8, -1)  # top-3; 0.95 keeps all three
    freq = torch.bincount(drawn, minlength=5).float() / n
    assert freq[[2, 3]].sum() == 0
    assert torch.allclose(freq[[0, 1, 4]], top, atol=0.015)
    again = RowSampler(s, [7, 3])(None, logits.repeat(2, 1)).argmax(-1)
    assert again.tolist() == [drawn[7].item(), drawn[3].item()]  # a row's draw is its own


def test_answer_seeds_are_stable_and_distinct() -> None:
    assert answer_seed(0, "k", 0) == answer_seed(0, "k", 0) == 7078672935858042816
    seeds = {answer_seed(s, k, q) for s in (0, 1) for k in ("a", "b") for q in (0, 1)}
    assert len(seeds) == 8 and all(0 <= x < 2**63 for x in seeds)
