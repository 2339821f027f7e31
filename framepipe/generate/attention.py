"""SDPA with a fast path for short queries on the CPU.

PyTorch's CPU attention kernel (``scaled_dot_product_attention``'s flash kernel) is slow when
the query is one or a few tokens long and the keys are many: the decoding steps after a long
prefix of frames. Measured on a 2-core AVX-512 machine with 5,930 cached keys, 16 heads of
64: one query row took 7 ms in the kernel against 2 ms as two matmuls and a softmax, five rows
(five questions) 28 ms against 6 ms; from about 16 query tokens up the kernel is the faster.
Decoding runs this once per layer per new token, so it decides how much a question costs
once its clip is prefilled.

:data:`CPU_SDPA` is registered with transformers' ``AttentionInterface`` (and its mask
function with ``AttentionMaskInterface``, so masks are built exactly as for ``sdpa``). It
computes short queries the way transformers' eager attention does (scores in the model's
dtype, softmax in float32) and hands everything else - long queries, other devices,
features the short path does not cover - to transformers' own ``sdpa`` function.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

CPU_SDPA = "framepipe_cpu_sdpa"
"""The attention implementation name framepipe loads models with on the CPU for ``sdpa``."""

SHORT_QUERY = 4
"""Queries of at most this many tokens take the matmul path."""

_registered = False


def register() -> str:
    """Register :data:`CPU_SDPA` with transformers (once per process); returns the name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(CPU_SDPA, cpu_sdpa_attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_SDPA, sdpa_mask)
        _registered = True
    return CPU_SDPA


def cpu_sdpa_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature: ``query`` (batch, heads, q, dim),
    ``key``/``value`` (batch, kv_heads, k, dim), ``attention_mask`` boolean (True = attend)
    or additive, broadcastable to (batch, 1, q, k); returns (batch, q, heads, dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len = query.shape[2]
    short = (
        q_len <= SHORT_QUERY
        and query.device.type == "cpu"
        and not (dropout and module.training)
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("output_attentions", False)
        # a causal query block with no mask would need its own mask built here
        and (attention_mask is not None or q_len == 1 or not _causal(module, is_causal))
        and key.shape[-1] == query.shape[-1]
    )
    if not short:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    return _short_query_attention(query, key, value, attention_mask, scaling), None


def _causal(module: Any, is_causal: bool | None) -> bool:
    return bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))


def _short_query_attention(
    query: Any, key: Any, value: Any, mask: Any, scaling: float | None
) -> Any:
    import torch

    b, h, q_len, d = query.shape
    h_kv = key.shape[1]
    rep = h // h_kv
    scale = scaling if scaling is not None else d**-0.5
    # grouped heads: fold each key/value head's query heads into its query rows
    q = query.reshape(b, h_kv, rep * q_len, d)
    scores = torch.matmul(q * scale, key.transpose(-1, -2))  # (b, h_kv, rep*q, k)
    k_len = scores.shape[-1]
    if mask is not None:
        m = mask[..., :k_len]
        if m.shape[1] != 1:  # per-head mask: (b, h, q, k) -> (b, h_kv, rep*q, k)
            m = m.expand(b, h, q_len, k_len).reshape(b, h_kv, rep * q_len, k_len)
        elif rep > 1:
            m = m.expand(m.shape[0], 1, q_len, k_len).repeat(1, 1, rep, 1)
        is_bool = m.dtype == torch.bool
        scores = scores.masked_fill(~m, float("-inf")) if is_bool else scores + m
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    # a row with every key masked (only ever padding) gives zeros, as the kernel does
    probs = torch.nan_to_num(probs, nan=0.0).to(value.dtype)
    out = torch.matmul(probs, value)  # (b, h_kv, rep*q, d)
    return out.reshape(b, h, q_len, d).transpose(1, 2).contiguous()
