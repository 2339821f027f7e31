"""The pieces of a generation batch that need no model: the units that share one prefill,
token-id arithmetic, the static cache fill and padding, and out-of-memory detection.

Used by :class:`framepipe.generate.generator.Generator`; see its module docstring for how a
batch runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from framepipe.generate.config import GenerationSettings


@dataclass
class Unit:
    """Questions that share one prefill: one request, or one question of a request whose
    prompts share no prefix that covers its images."""

    request: int
    questions: list[int]
    """Indices into the request's questions."""
    ids: list[list[int]]
    """Token ids of each question's full prompt (images expanded)."""
    prefix_len: int
    """Tokens shared by all ``ids`` and prefilled once (always < every prompt's length)."""
    pixel_values: Any
    """The request's preprocessed images (n x 3 x H x W tensor) or None without images."""


@dataclass(frozen=True)
class Prompt:
    """One question's prompt, tokenized once."""

    text: str
    """The prompt text (``<image>`` placeholders not expanded)."""
    ids: list[int]
    """Its token ids with every placeholder expanded to the image's tokens (shared between
    requests with the same prompt: never modified)."""
    text_tokens: int
    """Tokens that are not image placeholders (what the context guard counts as text)."""


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n


def expand(ids: list[int], image: int, per_image: int) -> list[int]:
    """``ids`` with every ``image`` id repeated ``per_image`` times."""
    out: list[int] = []
    run = [image] * per_image
    for t in ids:
        if t == image:
            out.extend(run)
        else:
            out.append(t)
    return out


def unanswered(u: Unit, answered: list[list[bool]]) -> Unit | None:
    """``u`` with only its questions not answered yet (None when all are). The prefix stays
    the same: shared by all the questions, it is shared by any of them."""
    keep = [k for k, q in enumerate(u.questions) if not answered[u.request][q]]
    if not keep:
        return None
    if len(keep) == len(u.questions):
        return u
    return Unit(
        u.request,
        [u.questions[k] for k in keep],
        [u.ids[k] for k in keep],
        u.prefix_len,
        u.pixel_values,
    )


def fill_static_layer(layer: Any, k: Any, v: Any, rows: Any) -> None:
    """Start a static cache layer with the prefilled keys and values of ``rows`` (one row of
    ``k``/``v`` per cache row). The rows are copied straight into the layer's buffers: a
    gathered copy first (``index_select``) would be one more pass over every frame's keys
    and values, in fresh memory, per question."""
    from transformers.cache_utils import StaticLayer

    if type(layer) is not StaticLayer or layer.is_initialized:
        # e.g. a sliding-window layer, which keeps more state: its own update does the same
        layer.update(k.index_select(0, rows), v.index_select(0, rows))
        return
    n, width = len(rows), k.shape[2]
    layer.lazy_initialization(k[:1].expand(n, -1, -1, -1), v[:1].expand(n, -1, -1, -1))
    keys: Any = layer.keys
    values: Any = layer.values
    for r, b in enumerate(rows.tolist()):
        keys[r, :, :width].copy_(k[b])
        values[r, :, :width].copy_(v[b])
    layer.cumulative_length.fill_(width)


def pad_left(t: Any, width: int) -> Any:
    """Zeros in front of a (batch, heads, tokens, dim) cache tensor up to ``width`` tokens
    (the attention mask hides them)."""
    import torch.nn.functional as F

    return F.pad(t, (0, 0, width - t.shape[2], 0))


def answer_length(tokens: list[int], eos_ids: list[int]) -> int:
    """Tokens generated before the first end-of-turn token (padding after it not counted)."""
    for i, t in enumerate(tokens):
        if t in eos_ids:
            return i
    return len(tokens)


def is_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, torch.OutOfMemoryError):  # CUDA (and other accelerators)
        return True
    # the CPU allocator raises a plain RuntimeError
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prefill(
    model: Any,
    device: Any,
    dtype: Any,
    group: list[Unit],
    prefix: Any,
    prefix_mask: Any,
    *,
    batched: bool,
) -> list[tuple[Any, Any]]:
    """Run the shared prefixes (frames included) through the model; returns each layer's
    keys and values, left-padded to ``prefix``'s width.

    Prefixes of equal length run as one batch with no attention mask (the causal kernel
    never materializes a mask). Unequal ones run as one padded batch when ``batched`` (GPUs),
    but one at a time otherwise (CPUs): a padded batch needs an explicit mask, which makes CPU
    attention build the whole (tokens x tokens) score matrix - slower than the model itself
    at 8 frames.
    """
    import torch
    from transformers import DynamicCache

    dev = device
    lengths = [u.prefix_len for u in group]
    equal = len(set(lengths)) == 1
    if equal or batched:
        parts = [(group, prefix, prefix_mask, not equal)]
    else:
        w = prefix.shape[1]
        parts = [
            ([u], prefix[b : b + 1, w - u.prefix_len :], None, False) for b, u in enumerate(group)
        ]
    per_part: list[list[tuple[Any, Any]]] = []
    for units, ids, mask, masked in parts:
        pv = [u.pixel_values for u in units if u.pixel_values is not None]
        pixel_values = torch.cat(pv).to(dev, dtype) if pv else None
        kwargs: dict[str, Any] = {}
        if masked:
            kwargs["attention_mask"] = mask.to(dev)
            kwargs["position_ids"] = ((mask.cumsum(-1) - 1).clamp(min=0)).to(dev)
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model(
                input_ids=ids.to(dev),
                pixel_values=pixel_values,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
                **kwargs,
            )
        per_part.append([(k, v) for k, v, *_ in cache])
    if len(per_part) == 1:
        return per_part[0]
    width = prefix.shape[1]
    out: list[tuple[Any, Any]] = []
    for layer in zip(*per_part):
        ks = [pad_left(k, width) for k, _ in layer]
        vs = [pad_left(v, width) for _, v in layer]
        out.append((torch.cat(ks), torch.cat(vs)))
    return out


def generation_config(model: Any, s: GenerationSettings, eos_ids: list[int], pad_id: int) -> Any:
    """The transformers GenerationConfig for ``s``: the model's own, with framepipe's
    decoding settings."""
    """The transformers GenerationConfig for ``s``: the model's own, with framepipe's
    decoding settings."""
    import copy

    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    gc = copy.deepcopy(base) if base is not None else GenerationConfig()
    gc.max_new_tokens = s.max_new_tokens
    gc.max_length = None
    gc.do_sample = s.do_sample
    gc.num_beams = s.num_beams
    gc.repetition_penalty = s.repetition_penalty
    gc.eos_token_id = eos_ids or None
    gc.pad_token_id = pad_id
    gc.disable_compile = True  # batch shapes vary: compiling would recompile per batch
    if s.do_sample:
        gc.temperature, gc.top_p, gc.top_k = s.temperature, s.top_p, s.top_k
    else:
        gc.temperature, gc.top_p, gc.top_k = None, None, None
    return gc
