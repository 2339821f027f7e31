"""The CPU SDPA variant: the short-query matmul path against PyTorch's kernel, its dispatch,
and the static-cache fill used when several questions share a clip's prefill."""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from framepipe.generate import attention
from framepipe.generate.attention import (
    CPU_SDPA,
    _short_query_attention,
    cpu_sdpa_attention_forward,
)
from framepipe.generate.batching import fill_static_layer as _fill_static_layer


def _module(groups: int = 1, causal: bool = True) -> Any:
    return types.SimpleNamespace(num_key_value_groups=groups, is_causal=causal, training=False)


def _reference(q: Any, k: Any, v: Any, mask: Any, groups: int) -> Any:
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("q_len", [1, 3])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "per_head"])
def test_short_query_path_equals_the_kernel_in_float32(
    q_len: int, groups: int, mask_kind: str
) -> None:
    g = torch.Generator().manual_seed(q_len * 10 + groups)
    b, h, k_len, d = 3, 8, 57, 16
    q = torch.randn(b, h, q_len, d, generator=g)
    k = torch.randn(b, h // groups, k_len, d, generator=g)
    v = torch.randn(b, h // groups, k_len, d, generator=g)
    keep = torch.rand(b, 1, q_len, k_len, generator=g) > 0.3
    keep[..., 0] = True
    mask: Any = None
    if mask_kind == "bool":
        mask = keep
    elif mask_kind == "float":
        mask = torch.zeros(b, 1, q_len, k_len).masked_fill(~keep, float("-inf"))
    elif mask_kind == "per_head":
        mask = torch.rand(b, h, q_len, k_len, generator=g) > 0.3
        mask[..., 0] = True
    out = _short_query_attention(q, k, v, mask, None)
    assert out.shape == (b, q_len, h, d)
    ref = _reference(q, k, v, mask, groups)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    if q_len == 1:  # what the model calls
        via, weights = cpu_sdpa_attention_forward(_module(groups), q, k, v, mask)
        assert weights is None
        torch.testing.assert_close(via, out, atol=0, rtol=0)


@pytest.mark.parametrize("spread", [1.0, 3.0])
def test_bfloat16_error_is_no_worse_than_the_kernels(spread: float) -> None:
    """In bfloat16 the path must not lose precision against PyTorch's kernel (scores
    rounded to bfloat16 before the softmax would: several times the kernel's error)."""
    g = torch.Generator().manual_seed(int(spread))
    b, h, k_len, d = 2, 4, 700, 64
    q, k, v = (
        (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) * s).to(torch.bfloat16)
        for n, s in ((1, spread), (k_len, spread), (k_len, 1.0))
    )
    mask = torch.ones(b, 1, 1, k_len, dtype=torch.bool)
    mask[..., -30:] = False
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    kernel = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ours = _short_query_attention(q, k, v, mask, None).transpose(1, 2)
    assert ours.dtype == torch.bfloat16

    def err(x: Any) -> float:
        return float((x.double() - exact).norm() / exact.norm())

    assert err(ours) <= 1.1 * err(kernel) + 1e-5, (err(ours), err(kernel))


def test_short_query_path_is_taken_only_for_short_cpu_queries(monkeypatch: Any) -> None:
    calls: list[int] = []
    real = attention._short_query_attention

    def spy(query: Any, *args: Any) -> Any:
        calls.append(query.shape[2])
        return real(query, *args)

    monkeypatch.setattr(attention, "_short_query_attention", spy)
    assert attention.SHORT_QUERY == 1  # decoding steps only: the kernel is as fast from 4
    q_long = torch.randn(1, 2, attention.SHORT_QUERY + 1, 8)
    k = torch.randn(1, 2, 20, 8)
    mask = torch.ones(1, 1, attention.SHORT_QUERY + 1, 20, dtype=torch.bool)
    cpu_sdpa_attention_forward(_module(), q_long, k, k, mask)
    assert calls == []  # long query: PyTorch's kernel
    cpu_sdpa_attention_forward(_module(), q_long[:, :, :2], k, k, None)
    assert calls == []  # (2 tokens, no mask: causal, built by the kernel)
    cpu_sdpa_attention_forward(_module(), q_long[:, :, :1], k, k, None)
    cpu_sdpa_attention_forward(_module(), q_long[:, :, :1], k, k, mask[:, :, :1])
    assert calls == [1, 1]


def test_a_row_with_every_key_masked_gives_zeros_not_nan() -> None:
    q = torch.randn(2, 2, 1, 8)
    k = torch.randn(2, 2, 10, 8)
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[1] = False
    out, _ = cpu_sdpa_attention_forward(_module(), q, k, k, mask)
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[1]) == 0


def test_registered_with_transformers() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface

    assert attention.register() == CPU_SDPA
    assert AttentionInterface()[CPU_SDPA] is attention.cpu_sdpa_attention_forward
    assert AttentionMaskInterface()[CPU_SDPA] is AttentionMaskInterface()["sdpa"]


def test_static_cache_fill_equals_its_own_update() -> None:
    from transformers.cache_utils import StaticLayer

    g = torch.Generator().manual_seed(0)
    k = torch.randn(3, 4, 7, 8, generator=g).to(torch.bfloat16)
    v = torch.randn(3, 4, 7, 8, generator=g).to(torch.bfloat16)
    rows = torch.tensor([2, 0, 2, 1])
    ours, theirs = StaticLayer(max_cache_len=12), StaticLayer(max_cache_len=12)
    _fill_static_layer(ours, k, v, rows)
    theirs.update(k.index_select(0, rows), v.index_select(0, rows))
    assert torch.equal(ours.keys, theirs.keys)
    assert torch.equal(ours.values, theirs.values)
    assert int(ours.get_seq_length()) == int(theirs.get_seq_length()) == 7
    # the next token lands after the prefix in both
    nk = torch.randn(4, 4, 1, 8, generator=g).to(torch.bfloat16)
    ours.update(nk, nk)
    theirs.update(nk, nk)
    assert torch.equal(ours.keys, theirs.keys)


def test_static_cache_fill_leaves_sliding_window_layers_to_their_own_update() -> None:
    from transformers.cache_utils import StaticSlidingWindowLayer

    g = torch.Generator().manual_seed(1)
    k = torch.randn(2, 2, 6, 4, generator=g)
    rows = torch.tensor([1, 1, 0])
    ours = StaticSlidingWindowLayer(max_cache_len=40, sliding_window=8)
    theirs = StaticSlidingWindowLayer(max_cache_len=40, sliding_window=8)
    _fill_static_layer(ours, k, k, rows)
    theirs.update(k.index_select(0, rows), k.index_select(0, rows))
    for _ in range(12):  # past the window: the layer must know how full it is
        nk = torch.randn(3, 2, 1, 4, generator=g)
        a, _ = ours.update(nk, nk)
        b, _ = theirs.update(nk, nk)
        assert torch.equal(a, b)
