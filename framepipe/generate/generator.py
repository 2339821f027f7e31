"""The generator: loads a LLaVA model once and answers batches of requests.

How a batch runs. Every request's frames are encoded once: the prompt prefix that all its
questions share (system turn, user header, every image's tokens - the chat template puts the
images before the text) goes through the vision tower and the text model in one forward pass
that fills a KV cache. The cache rows are then copied once per question into a static cache
sized for the whole answer (written in place, where a growing cache would copy every frame's
keys and values again at each new token), and all questions are generated together. Several
requests are prefilled side by side with left padding; a question's text is left-padded too:
the attention mask hides the padding and the position ids skip it, so the answers are those
of separate runs. On a transformers release this path was not tested on
(:func:`~framepipe.generate.batching.fast_path_supported`), or when its first batch finds an
API changed, plain ``model.generate`` answers instead (slower, the same answers). Seeded
sampling draws each answer from its own stream, whatever the batch (:mod:`.sampling`).

``batch_size`` bounds the sequences generated together (requests x questions). On
out-of-memory (``torch.OutOfMemoryError``; the CPU allocator's "can't allocate memory") it
is halved for good and only the questions not answered yet are retried; once one sequence
fails alone, the images the vision tower encodes at once are halved (the prefix is then
prefilled in pieces); a clip that still runs out of memory with one image at a time fails
with a one-line :class:`GenerationError`. A CUDA error that leaves the GPU unusable (an
illegal memory access, a device-side assert) stops the run (:class:`StopRunError`).

Each distinct prompt is built and tokenized once per call. Images come preprocessed
(:class:`~framepipe.generate.config.Prepared` pixel values, made where the clip was decoded:
see :class:`PixelValues`) or are preprocessed here.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from framepipe.errors import (
    FramepipeError,
    GenerationError,
    ModelLoadError,
    PromptError,
    StopRunError,
)
from framepipe.generate.batching import (
    Progress,
    Prompt,
    Unit,
    answer_length,
    cache_argument,
    expand,
    fast_path_supported,
    fill_static_layer,
    free_cuda,
    generation_config,
    images_of,
    is_oom,
    is_sticky_cuda_error,
    left_pad,
    plain_generate,
    prefill,
    unanswered,
    units_of,
)
from framepipe.generate.config import Answer, GenerationSettings, ModelConfig, Prepared, Request
from framepipe.generate.device import Runtime, resolve_runtime, weights_kwargs
from framepipe.generate.hub import check_loaded_weights, quiet_hf
from framepipe.generate.spec import ModelSpec, PixelValues, describe_model

log = logging.getLogger(__name__)


class Generator:
    """A loaded model that answers :class:`Request` objects. Build it with :meth:`load`."""

    def __init__(
        self,
        model: Any,
        spec: ModelSpec,
        runtime: Runtime,
        settings: GenerationSettings,
    ) -> None:
        self.model = model
        self.spec = spec
        self.runtime = runtime
        self.settings = settings
        self.cfg: ModelConfig = spec.cfg
        """The model's config (the one ``spec`` was inspected with)."""
        self.batch_size = settings.batch_size
        """The current batch size (halved after a CUDA out-of-memory error)."""
        self.image_batch: int | None = None
        """The most images the vision tower encodes at once (None: no limit; halved after an
        out-of-memory error of one sequence)."""
        self.fast = fast_path_supported()
        """Whether questions share their clip's prefill (else plain ``model.generate``)."""
        self._fast_ok = False
        """Whether the shared-prefix path has answered once (an API error before that turns
        it off)."""
        self.batched_prefill = runtime.device.type != "cpu"
        """Prefill prefixes of unequal length as one padded batch (GPUs) or one at a time."""
        tok = spec.tokenizer
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
        if tok.eos_token_id is not None and tok.eos_token_id not in eos_ids:
            eos_ids.append(tok.eos_token_id)
        self.eos_ids: list[int] = [int(i) for i in eos_ids]
        pad = tok.pad_token_id
        if pad is None:
            pad = getattr(gen_cfg, "pad_token_id", None)
        if pad is None:
            pad = self.eos_ids[0] if self.eos_ids else 0
        self.pad_id: int = int(pad)
        self._expand_ids_ok: bool | None = None
        """Whether expanding the placeholders' ids gives the ids of the expanded text (checked
        on the first prompt with images; None until then)."""

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        cfg: ModelConfig,
        settings: GenerationSettings | None = None,
        spec: ModelSpec | None = None,
        runtime: Runtime | None = None,
    ) -> Generator:
        """Load ``cfg.model``: device, dtype, attention and quantization are checked first
        (one-line errors; ``runtime``: already resolved from ``cfg`` here), then the config
        and processor, then the safetensors weights."""
        settings = settings or GenerationSettings()
        runtime = runtime or resolve_runtime(cfg)
        spec = spec or ModelSpec.inspect(cfg)
        if spec.cfg != cfg:
            raise ValueError(f"spec was inspected for {spec.cfg}, not for {cfg}")

        import torch
        from transformers import LlavaForConditionalGeneration

        kwargs = {**spec.load_kwargs, **weights_kwargs(runtime)}
        load: Any = LlavaForConditionalGeneration.from_pretrained  # -> (model, loading info)
        t0 = time.perf_counter()
        try:
            with quiet_hf(errors_only=True):
                model, info = load(spec.source, output_loading_info=True, **kwargs)
        except torch.OutOfMemoryError:
            raise ModelLoadError(
                f"{cfg.model}: out of memory while loading on {runtime.device} "
                f"({runtime.dtype_name}); try --quantize 4bit or a smaller model"
            ) from None
        except Exception as exc:
            text = " ".join(str(exc).split())[:300]
            raise ModelLoadError(f"{cfg.model}: cannot load the weights: {text}") from None
        check_loaded_weights(cfg.model, info, random_weights=spec.random_weights)
        model.eval()
        log.info(
            "loaded %s on %s (%s, attn=%s%s) in %.1fs%s",
            cfg.model,
            runtime.device,
            runtime.dtype_name,
            runtime.attn,
            f", {runtime.quantize}" if runtime.quantize else "",
            time.perf_counter() - t0,
            " - RANDOM WEIGHTS" if spec.random_weights else "",
        )
        return cls(model, spec, runtime, settings)

    def describe(self) -> dict[str, Any]:
        """What a record says about the model (:func:`describe_model`)."""
        return describe_model(self.spec, self.runtime)

    # -- answering -----------------------------------------------------------------------

    def answer(self, requests: Sequence[Request]) -> list[Answer]:
        """One :class:`Answer` per request, in order. Raises PromptError (before any
        generation) when a prompt does not fit the context, GenerationError when a batch
        fails."""
        out = self._answer(requests, strict=True)
        return [a for a in out if isinstance(a, Answer)]

    def answer_each(self, requests: Sequence[Request]) -> list[Answer | FramepipeError]:
        """Like :meth:`answer`, but a request whose prompt does not fit (PromptError) or that
        runs out of memory even at batch size 1 (GenerationError) gets its error in its place
        and the others are answered. Raises GenerationError when a batch fails otherwise."""
        return self._answer(requests, strict=False)

    def _answer(
        self, requests: Sequence[Request], *, strict: bool
    ) -> list[Answer | FramepipeError]:
        if not requests:
            return []
        s = self.settings
        results: list[Answer | FramepipeError | None] = [None] * len(requests)
        memo: dict[tuple[Any, ...], Prompt] = {}
        prompts: list[list[Prompt]] = []
        # every prompt is checked against the context before any image is processed
        for i, r in enumerate(requests):
            try:
                ps = [
                    self._prompt(len(r.images), q, r.system, r.segments, memo) for q in r.questions
                ]
                self.spec.check_budget(
                    len(r.images),
                    max(p.text_tokens for p in ps),
                    max_new_tokens=s.max_new_tokens,
                )
            except PromptError as exc:
                if strict:
                    raise
                results[i] = exc
                ps = []
            prompts.append(ps)
        units: list[Unit] = []
        layouts: dict[tuple[int, ...], int | None] = {}
        for i, r in enumerate(requests):
            if results[i] is None:
                units.extend(self._units(i, r, prompts[i], layouts))
        done = Progress.of([len(r.questions) for r in requests])
        seeded = s.do_sample and s.seed is not None  # each answer draws its own stream
        idents = [r.identity() for r in requests] if seeded else None

        queue = deque(units)
        while queue:
            group = [queue.popleft()]
            rows = len(group[0].questions)
            while queue and rows + len(queue[0].questions) <= self.batch_size:
                rows += len(queue[0].questions)
                group.append(queue.popleft())
            tried = min(rows, self.batch_size)
            try:
                self._run_group(group, done, idents)
                continue
            except Exception as exc:
                if is_sticky_cuda_error(exc):
                    raise StopRunError(
                        f"{self.runtime.device}: {' '.join(str(exc).split())[:200]}: the GPU "
                        "cannot be used again in this process; the run stops here (what is "
                        "written stays: run the same command again to resume)"
                    ) from None
                if not is_oom(exc):
                    raise GenerationError(
                        f"generation failed for a batch of {len(group)} clip(s): "
                        f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                    ) from exc
            # out of memory; freed here, once the exception (and the tensors its traceback
            # holds) is gone. Questions already answered keep their answers.
            free_cuda()
            rest = [x for u in group if (x := unanswered(u, done.answered)) is not None]
            images = sum(images_of(u) for u in group)
            if tried > 1 or (images > 1 and (self.image_batch or images) > 1):
                if tried > 1:  # halved until smaller than what failed (else it would repeat)
                    while self.batch_size > 1 and self.batch_size >= tried:
                        self.batch_size //= 2
                else:  # one sequence: fewer images through the vision tower at once
                    self.image_batch = min(self.image_batch or images, images) // 2
                what = f"batch size {self.batch_size}, {self.image_batch or 'all'} image(s) at once"
                log.warning("out of memory: retrying with %s", what)
                queue.extendleft(reversed(rest))
                continue
            # one sequence and one image at a time, and it still does not fit
            for u in rest:
                err = GenerationError(
                    f"out of memory on {self.runtime.device} with batch size 1 "
                    f"({len(u.ids[0])} prompt tokens); use fewer frames, "
                    "--quantize 4bit or a smaller model"
                )
                if strict:
                    raise err
                results[u.request] = err
                # the request's other units (one per question) would be wasted work
                queue = deque(x for x in queue if x.request != u.request)
                log.warning("%s", err)
        for i in range(len(requests)):
            if results[i] is None:
                ps = prompts[i]
                results[i] = Answer(
                    prompt=ps[0].text,
                    answers=done.texts[i],
                    generate_s=round(done.seconds[i], 4),
                    prompt_tokens=len(ps[0].ids),
                    new_tokens=done.counts[i],
                    prompts=[p.text for p in ps],
                    batch_size=done.widths[i],
                    truncated=list(done.truncated[i]),
                )
        return [x for x in results if x is not None]

    def _prompt(
        self,
        n_images: int,
        question: str,
        system: str | None,
        segments: Sequence[Any] | None,
        memo: dict[tuple[Any, ...], Prompt],
    ) -> Prompt:
        """The prompt of one question, built and tokenized once per distinct prompt."""
        key = (n_images, question, system, tuple(segments) if segments is not None else None)
        hit = memo.get(key)
        if hit is not None:
            return hit
        spec = self.spec
        text = spec.build_prompt(n_images, question, system, segments)
        raw = [int(t) for t in spec.tokenizer(text, add_special_tokens=True)["input_ids"]]
        image = spec.image_token_id
        ids = expand(raw, image, spec.tokens_per_image)
        if image in raw and self._expand_ids_ok is not True:
            # The processor expands the text, then tokenizes; expanding the ids is the same
            # for a placeholder the tokenizer splits off (checked once, else the text way).
            ref = [
                int(t)
                for t in spec.tokenizer(spec.expand(text), add_special_tokens=True)["input_ids"]
            ]
            if self._expand_ids_ok is None:
                self._expand_ids_ok = ref == ids
                if not self._expand_ids_ok:
                    log.info("image placeholders do not tokenize alone: expanding the text")
            ids = ref
        hit = memo[key] = Prompt(text, ids, sum(1 for t in raw if t != image))
        return hit

    def _units(
        self,
        index: int,
        r: Request,
        prompts: list[Prompt],
        layouts: dict[tuple[int, ...], int | None],
    ) -> list[Unit]:
        """The request's units (see :func:`~framepipe.generate.batching.units_of`), its
        images preprocessed unless they come so."""
        pixel_values = None
        if len(r.images):
            import torch

            images = (
                r.images if isinstance(r.images, Prepared) else PixelValues(self.spec)(r.images)
            )
            pixel_values = torch.as_tensor(images.data)
        key = tuple(id(p) for p in prompts)  # the prompts live in the call's memo
        ids = [p.ids for p in prompts]
        return units_of(index, ids, pixel_values, self.spec.image_token_id, layouts, key)

    def _run_group(self, group: list[Unit], done: Progress, idents: list[str] | None) -> None:
        """Answer the group's questions not answered yet, ``batch_size`` rows at a time; each
        answer is written (and marked answered) as soon as its rows end."""
        if self.fast:
            try:
                self._shared_prefix(group, done, idents)
                self._fast_ok = True
                return
            except (TypeError, AttributeError, ValueError) as exc:
                if self._fast_ok:
                    raise
                import transformers

                log.warning(
                    "transformers %s: the shared-prefix path failed (%s); answering with "
                    "model.generate from now on (slower, the same answers)",
                    transformers.__version__,
                    " ".join(f"{type(exc).__name__}: {exc}".split())[:200],
                )
                self.fast = False
        todo = [(u, k) for u in group for k, q in enumerate(u.questions)]
        rows = [(u, k) for u, k in todo if not done.answered[u.request][u.questions[k]]]
        gen_cfg = self._generation_config()
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            t1 = time.perf_counter()
            dev, dtype, draw = self.runtime.device, self.runtime.dtype, self._draw(idents, chunk)
            new = plain_generate(self.model, dev, dtype, chunk, self.pad_id, gen_cfg, draw)
            done.write(chunk, new, time.perf_counter() - t1, self._decode)

    def _shared_prefix(self, group: list[Unit], done: Progress, idents: list[str] | None) -> None:
        """Prefill the group's prefixes once and answer their questions from copies of the
        prefilled cache rows."""
        import torch
        from transformers import StaticCache

        model, dev = self.model, self.runtime.device
        t0 = time.perf_counter()
        prefix, prefix_mask = left_pad([u.ids[0][: u.prefix_len] for u in group], self.pad_id)
        layers = prefill(
            model,
            dev,
            self.runtime.dtype,
            group,
            prefix,
            prefix_mask,
            batched=self.batched_prefill,
            image_batch=self.image_batch,
            image_id=self.spec.image_token_id,
        )
        for u in group:  # the shared prefill, split evenly over its requests
            done.seconds[u.request] += (time.perf_counter() - t0) / len(group)

        rows = [(b, k) for b, u in enumerate(group) for k in range(len(u.questions))]
        gen_cfg = self._generation_config()
        beams = max(1, self.settings.num_beams)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            t1 = time.perf_counter()
            idx = torch.tensor([b for b, _ in chunk])
            cache_idx = (idx.repeat_interleave(beams) if beams > 1 else idx).to(dev)
            suffix, suffix_mask = left_pad(
                [group[b].ids[k][group[b].prefix_len :] for b, k in chunk], self.pad_id
            )
            # A static cache sized for the whole answer: each step writes in place, where a
            # dynamic cache would copy all of it (frames included) once per new token.
            size = prefix.shape[1] + suffix.shape[1] + gen_cfg.max_new_tokens
            sub = StaticCache(config=model.config, max_cache_len=size)
            for layer, (k, v) in zip(list(sub.layers), layers):
                fill_static_layer(layer, k, v, cache_idx)
            input_ids = torch.cat([prefix[idx], suffix], dim=1).to(dev)
            attention_mask = torch.cat([prefix_mask[idx], suffix_mask], dim=1).to(dev)
            chunk_units = [(group[b], k) for b, k in chunk]
            with torch.inference_mode():
                ids = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=gen_cfg,
                    logits_processor=self._draw(idents, chunk_units),
                    **{cache_argument(model): sub},
                )
            new = ids[:, input_ids.shape[1] :].cpu()
            done.write(chunk_units, new, time.perf_counter() - t1, self._decode)
            del sub

    def _decode(self, tokens: list[int]) -> tuple[str, int]:
        """An answer's text and its new tokens (up to the end of its turn)."""
        n = answer_length(tokens, self.eos_ids)
        return self.spec.tokenizer.decode(tokens[:n], skip_special_tokens=True).strip(), n

    def _draw(self, idents: list[str] | None, rows: list[tuple[Unit, int]]) -> Any:
        """Seeded sampling's logits processors for ``rows`` (:mod:`.sampling`), else None."""
        if idents is None:
            return None
        from framepipe.generate.sampling import row_sampler

        return row_sampler(self.settings, [(idents[u.request], u.questions[k]) for u, k in rows])

    def _generation_config(self) -> Any:
        """The GenerationConfig of every batch (a hook: the benchmarks force answer lengths)."""
        return generation_config(self.model, self.settings, self.eos_ids, self.pad_id)
