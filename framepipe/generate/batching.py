"""The pieces of a generation batch that need no model: the units that share one prefill,
token-id arithmetic, the prefill itself, the static cache fill and padding, and
out-of-memory and CUDA-error detection.

Used by :class:`framepipe.generate.generator.Generator`; see its module docstring for how a
batch runs. What calls transformers uses its public API (``forward`` and ``generate`` with a
cache, ``DynamicCache``, ``StaticCache``), with two exceptions kept here: the cache argument,
renamed between releases (``past_key_values``, then ``cache``), is read from the model's own
signature (:func:`cache_argument`), and :func:`fill_static_layer` writes a static cache
layer's buffers itself, because the public ``update`` needs a gathered copy of the prefix
first (1.3-2x the time of the fill on the CPU, measured: BENCHMARKS.md). The generator takes
this path only on the transformers releases it was tested on (:func:`fast_path_supported`);
elsewhere it answers through plain ``model.generate`` (:func:`plain_generate`).
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


@dataclass
class Progress:
    """What one call has answered so far, per request (and per question)."""

    texts: list[list[str]]
    counts: list[list[int]]
    """New tokens of each answer."""
    answered: list[list[bool]]
    seconds: list[float]
    widths: list[int]
    """The most sequences decoded together with each request's."""
    truncated: list[list[bool]]
    """Whether each answer stopped at the token limit (no end-of-turn token)."""

    @classmethod
    def of(cls, questions: Sequence[int]) -> Progress:
        """Nothing answered yet, for requests of ``questions`` questions each."""
        n = len(questions)
        return cls(
            [[""] * q for q in questions],
            [[0] * q for q in questions],
            [[False] * q for q in questions],
            [0.0] * n,
            [0] * n,
            [[False] * q for q in questions],
        )

    def write(self, chunk: list[tuple[Unit, int]], new: Any, dt: float, decode: Any) -> None:
        """The answers of ``chunk`` (a unit and the index of one of its questions per row of
        ``new``): ``decode(tokens)`` gives (text, new tokens before the end of the turn; all
        of them: the answer ran to the token limit); they took ``dt`` seconds."""
        for r, (u, k) in enumerate(chunk):
            q, tokens = u.questions[k], new[r].tolist()
            self.texts[u.request][q], self.counts[u.request][q] = decode(tokens)
            self.truncated[u.request][q] = self.counts[u.request][q] >= len(tokens)
            self.answered[u.request][q] = True
            self.seconds[u.request] += dt / len(chunk)
            self.widths[u.request] = max(self.widths[u.request], len(chunk))


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """``seqs`` left-padded to one width: (ids, attention mask), long tensors."""
    import torch

    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, x in enumerate(seqs):
        ids[r, width - len(x) :] = torch.tensor(list(x), dtype=torch.long)
        mask[r, width - len(x) :] = 1
    return ids, mask


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


def units_of(
    index: int,
    ids: list[list[int]],
    pixel_values: Any,
    image_id: int,
    layouts: dict[tuple[int, ...], int | None],
    key: tuple[int, ...],
) -> list[Unit]:
    """Request ``index``'s units, from its questions' prompt ``ids``: one sharing the prefix
    that holds all its images, or one per question when the images are not all inside the
    shared prefix. ``layouts`` remembers the shared prefix of the prompts ``key`` names."""
    if key not in layouts:
        shared: int | None = min(common_prefix(ids), min(len(x) for x in ids) - 1)
        last_image = max((k for k, t in enumerate(ids[0]) if t == image_id), default=-1)
        layouts[key] = shared if shared is not None and last_image < shared >= 1 else None
    shared = layouts[key]
    if shared is not None:
        return [Unit(index, list(range(len(ids))), ids, shared, pixel_values)]
    return [Unit(index, [q], [x], len(x) - 1, pixel_values) for q, x in enumerate(ids)]


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
    gathered copy first (``index_select``, what the public ``update`` needs) would be one
    more pass over every frame's keys and values, in fresh memory, per question."""
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
    import torch

    if isinstance(exc, torch.OutOfMemoryError):  # CUDA (and other accelerators)
        return True
    # the CPU allocator raises a plain RuntimeError
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


_STICKY_CUDA = ("CUDA error", "device-side assert", "CUBLAS_STATUS_EXECUTION_FAILED")


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a CUDA error that leaves the device unusable for this process (an
    illegal memory access, a device-side assert, a failed launch): every later call fails
    too. Out-of-memory is not one."""
    if is_oom(exc) or not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(s in text for s in _STICKY_CUDA)


def free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def images_of(u: Unit) -> int:
    """How many images the unit's prefix holds."""
    return 0 if u.pixel_values is None else int(u.pixel_values.shape[0])


def cache_argument(model: Any) -> str:
    """The name under which the model takes its KV cache: ``cache`` (transformers 5.2x and
    newer) or ``past_key_values`` (before)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


FAST_PATH_TRANSFORMERS = ("5.5.0", "6")
"""The transformers releases the shared-prefix path was tested on: from the lower bound of
``setup.cfg`` (tested in CI) up to, not including, the next major release."""


def fast_path_supported() -> bool:
    """Whether the installed transformers is one of :data:`FAST_PATH_TRANSFORMERS`."""
    import transformers
    from packaging.version import Version

    low, high = (Version(v) for v in FAST_PATH_TRANSFORMERS)
    return low <= Version(transformers.__version__) < high


def prefill(
    model: Any,
    device: Any,
    dtype: Any,
    group: list[Unit],
    prefix: Any,
    prefix_mask: Any,
    *,
    batched: bool,
    image_batch: int | None = None,
    image_id: int = -1,
) -> list[tuple[Any, Any]]:
    """Run the shared prefixes (frames included) through the model; returns each layer's
    keys and values, left-padded to ``prefix``'s width.

    Prefixes of equal length run as one batch with no attention mask (the causal kernel
    never materializes a mask). Unequal ones run as one padded batch when ``batched`` (GPUs),
    but one at a time otherwise (CPUs): a padded batch needs an explicit mask, which makes CPU
    attention build the whole (tokens x tokens) score matrix - slower than the model itself
    at 8 frames. At most ``image_batch`` images (None: no limit) go through the vision tower
    at once: a group with more runs one prefix at a time, and a prefix with more runs in
    pieces that end after an image (each piece continuing the cache of the ones before).
    """
    import torch
    from transformers import DynamicCache

    dev = device
    arg = cache_argument(model)
    lengths = [u.prefix_len for u in group]
    equal = len(set(lengths)) == 1
    few = image_batch is None or sum(images_of(u) for u in group) <= image_batch
    if (equal or batched) and few:
        parts = [(group, prefix, prefix_mask, not equal)]
    else:
        w = prefix.shape[1]
        parts = [
            ([u], prefix[b : b + 1, w - u.prefix_len :], None, False) for b, u in enumerate(group)
        ]
    per_part: list[list[tuple[Any, Any]]] = []
    for units, ids, mask, masked in parts:
        pv = [u.pixel_values for u in units if u.pixel_values is not None]
        pixels = torch.cat(pv) if pv else None
        kwargs: dict[str, Any] = {}
        if masked:
            kwargs["attention_mask"] = mask.to(dev)
            kwargs["position_ids"] = ((mask.cumsum(-1) - 1).clamp(min=0)).to(dev)
        cache = DynamicCache(config=model.config)
        n_images = sum(images_of(u) for u in units)
        for (a, b), (i, j) in pieces(ids[0], image_id, n_images, image_batch, few):
            with torch.inference_mode():
                model(
                    input_ids=ids[:, a:b].to(dev),
                    pixel_values=None if pixels is None or i == j else pixels[i:j].to(dev, dtype),
                    use_cache=True,
                    logits_to_keep=1,
                    **{arg: cache},
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


def pieces(
    ids: Any, image_id: int, images: int, image_batch: int | None, whole: bool
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """A prefix's pieces: ((first token, end token), (first image, end image)) each, with at
    most ``image_batch`` images per piece, cut right after an image; one piece for all when
    ``whole``."""
    n = int(ids.shape[-1])
    if whole or image_batch is None or images <= image_batch:
        return [((0, n), (0, images))]
    where = (ids == image_id).nonzero().flatten().tolist()
    per = len(where) // images
    ends = [where[(k + 1) * per - 1] + 1 for k in range(images)]
    cuts = [0, *(ends[k - 1] for k in range(image_batch, images, image_batch)), n]
    firsts = [*range(0, images, image_batch), images]
    return [((cuts[c], cuts[c + 1]), (firsts[c], firsts[c + 1])) for c in range(len(cuts) - 1)]


def plain_generate(
    model: Any,
    device: Any,
    dtype: Any,
    rows: list[tuple[Unit, int]],
    pad_id: int,
    gen_cfg: Any,
    logits_processor: Any = None,
) -> Any:
    """The new tokens of ``rows`` (a unit and the index of one of its questions each) through
    plain ``model.generate``: every row's whole prompt, left-padded, with its clip's images
    (the public API only, for transformers releases the shared-prefix path was not tested
    on); ``logits_processor``: the rows' seeded sampler, if any."""
    import torch

    input_ids, mask = left_pad([u.ids[q] for u, q in rows], pad_id)
    width = input_ids.shape[1]
    pv = [u.pixel_values for u, _ in rows if u.pixel_values is not None]
    kwargs = {"pixel_values": torch.cat(pv).to(device, dtype)} if pv else {}
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            generation_config=gen_cfg,
            logits_processor=logits_processor,
            **kwargs,
        )
    return out[:, width:].cpu()


def generation_config(model: Any, s: GenerationSettings, eos_ids: list[int], pad_id: int) -> Any:
    """The transformers GenerationConfig for ``s``: the model's own, with framepipe's
    decoding settings. Seeded sampling runs greedy: its logits processor draws each row's
    token (:mod:`framepipe.generate.sampling`); transformers samples only without a seed."""
    import copy

    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    gc = copy.deepcopy(base) if base is not None else GenerationConfig()
    gc.max_new_tokens = s.max_new_tokens
    gc.max_length = None
    gc.do_sample = s.do_sample and s.seed is None
    gc.num_beams = s.num_beams
    gc.repetition_penalty = s.repetition_penalty
    gc.eos_token_id = eos_ids or None
    gc.pad_token_id = pad_id
    gc.disable_compile = True  # batch shapes vary: compiling would recompile per batch
    if gc.do_sample:
        gc.temperature, gc.top_p, gc.top_k = s.temperature, s.top_p, s.top_k
    else:
        gc.temperature, gc.top_p, gc.top_k = None, None, None
    return gc
