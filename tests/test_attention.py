"""The CPU SDPA variant: the short-query matmul path against PyTorch's kernel, its dispatch,
and the static-cache fill used when several questions share a clip's prefill."""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from framepipe.generate import attention
from framepipe.generate.attention import CPU_SDPA, cpu_sdpa_attention_forward
from framepipe.generate.generator import _fill_static_layer


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
    module = _module(groups, causal=mask_kind != "none" or q_len == 1)
    if mask_kind == "none" and q_len > 1:
        module.is_causal = False  # a non-causal block (a vision tower) without a mask
    out, weights = cpu_sdpa_attention_forward(module, q, k, v, mask)
    assert weights is None
    assert out.shape == (b, q_len, h, d)
    ref = _reference(q, k, v, mask, groups)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)


def test_short_query_path_is_taken_only_for_short_cpu_queries(monkeypatch: Any) -> None:
    calls: list[int] = []
    real = attention._short_query_attention

    def spy(query: Any, *args: Any) -> Any:
        calls.append(query.shape[2])
        return real(query, *args)

    monkeypatch.setattr(attention, "_short_query_attention", spy)
    q_long = torch.randn(1, 2, attention.SHORT_QUERY + 1, 8)
    k = torch.randn(1, 2, 20, 8)
    mask = torch.ones(1, 1, attention.SHORT_QUERY + 1, 20, dtype=torch.bool)
    cpu_sdpa_attention_forward(_module(), q_long, k, k, mask)
    assert calls == []  # long query: PyTorch's kernel
    cpu_sdpa_attention_forward(_module(), q_long[:, :, :2], k, k, None)
    assert calls == []  # causal block of 2 with no mask: the kernel builds the causal mask
    cpu_sdpa_attention_forward(_module(), q_long[:, :, :1], k, k, None)
    cpu_sdpa_attention_forward(_module(), q_long[:, :, :2], k, k, mask[:, :, :2])
    assert calls == [1, 2]


def test_a_row_with_every_key_masked_gives_zeros_not_nan() -> None:
    q = torch.randn(2, 2, 1, 8)
    k = torch.randn(2, 2, 10, 8)
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[1] = False
    out, _ = cpu_sdpa_attention_forward(_module(), q, k, k, mask)
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[1]) == 0


def test_registered_with_transformers() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    assert attention.register() == CPU_SDPA
    assert CPU_SDPA in AttentionInterface._global_mapping
    assert CPU_SDPA in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping


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
