"""What a model is, read without its weights: :class:`ModelSpec`.

A model is a local folder written by ``save_pretrained`` or a Hugging Face hub id, found by
:mod:`framepipe.generate.hub`. The spec knows what a prompt costs (tokens per image from the
vision tower's config, the text's tokens from the tokenizer) and refuses, before anything is
loaded, a prompt that cannot fit the text model's context window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framepipe.errors import ModelLoadError, PromptError
from framepipe.generate.config import DEFAULT_MODEL, RANDOM_WEIGHTS_KEY, ModelConfig, Prepared
from framepipe.generate.hub import locate, quiet_hf
from framepipe.prompt import IMAGE_TOKEN, Segment, render_prompt

if TYPE_CHECKING:
    from framepipe.generate.device import Runtime

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llava",)
"""``config.model_type`` values framepipe runs (``LlavaForConditionalGeneration``)."""

# Vision towers that put a class token in front of the patch tokens.
_CLS_TOWERS = ("clip_vision_model",)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


class ModelSpec:
    """A model's config and processor (no weights): cheap, used for checks before loading.

    Use :meth:`inspect`. ``tokens_per_image`` and ``context_window`` come from the model's
    own config; :meth:`check_fits` and :meth:`max_images` apply them to a prompt.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        source: str,
        local_dir: Path | None,
        load_kwargs: dict[str, Any],
        config: Any,
        processor: Any,
    ) -> None:
        self.cfg = cfg
        self.source = source
        """What ``from_pretrained`` is given: the local folder or the hub id."""
        self.local_dir = local_dir
        """The model's folder when it is a local one."""
        self.load_kwargs = load_kwargs
        """``revision``, ``local_files_only``, ``trust_remote_code`` for ``from_pretrained``."""
        self.config = config
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token: str = getattr(processor, "image_token", IMAGE_TOKEN) or IMAGE_TOKEN
        self.image_token_id: int = int(config.image_token_id)
        self.tokens_per_image: int = tokens_per_image(config)
        self.context_window: int = int(config.text_config.max_position_embeddings)
        self.random_weights: bool = bool(getattr(config, RANDOM_WEIGHTS_KEY, False))
        self.revision: str | None = getattr(config, "_commit_hash", None) or cfg.revision
        self._check_processor()

    # -- finding the model -------------------------------------------------------------

    @classmethod
    def inspect(cls, cfg: ModelConfig, folder: Path | None = None) -> ModelSpec:
        """Read the config and processor of ``cfg.model`` (in ``folder``, the local folder it
        was found in elsewhere: see :func:`~framepipe.generate.hub.locate`); raises
        :class:`ModelLoadError` (one line) when the model is missing, unreachable, not a
        model, or not a LLaVA model."""
        source, local_dir, kwargs = locate(cfg, folder)
        from transformers import AutoConfig, AutoProcessor

        try:
            with quiet_hf():
                config = AutoConfig.from_pretrained(source, **kwargs)
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError ...
            raise ModelLoadError(
                f"{cfg.model}: cannot read the model's config: {_one_line(exc)}"
            ) from None
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(
                f"{cfg.model}: model_type {model_type!r} is not a multi-image LLaVA model "
                f"(framepipe runs LlavaForConditionalGeneration checkpoints such as "
                f"{DEFAULT_MODEL})"
            )
        try:
            with quiet_hf():
                processor = AutoProcessor.from_pretrained(source, **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"{cfg.model}: cannot read the model's processor: {_one_line(exc)}"
            ) from None
        if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
            raise ModelLoadError(
                f"{cfg.model}: no image processor next to the tokenizer "
                "(preprocessor_config.json missing): not a vision-language model folder"
            )
        return cls(
            cfg,
            source=source,
            local_dir=local_dir,
            load_kwargs=kwargs,
            config=config,
            processor=processor,
        )

    def _check_processor(self) -> None:
        size = _processor_image_size(self.processor)
        vc = self.config.vision_config
        if size is not None and size != (vc.image_size, vc.image_size):
            raise ModelLoadError(
                f"{self.cfg.model}: the processor resizes images to {size[0]}x{size[1]} but the "
                f"vision tower expects {vc.image_size}x{vc.image_size}"
            )
        ids = self.tokenizer.convert_tokens_to_ids(self.image_token)
        if ids != self.image_token_id:
            raise ModelLoadError(
                f"{self.cfg.model}: the tokenizer's {self.image_token} is id {ids} but the "
                f"model's image_token_id is {self.image_token_id}"
            )

    # -- prompts and the context guard -------------------------------------------------

    def build_prompt(
        self,
        n_images: int,
        question: str | Sequence[str],
        system: str | None = None,
        segments: Sequence[Segment] | None = None,
    ) -> str:
        """The chat text for ``n_images`` frames and one question (see
        :func:`framepipe.prompt.render_prompt`)."""
        return render_prompt(self.processor, n_images, question, system, segments)

    def expand(self, prompt: str) -> str:
        """``prompt`` with each placeholder expanded to the image's tokens, as the processor
        does before tokenizing."""
        return prompt.replace(self.image_token, self.image_token * self.tokens_per_image)

    def text_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` that are not image placeholders."""
        ids = self.tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"]
        return sum(1 for i in ids if i != self.image_token_id)

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens the model reads for ``prompt`` (from :meth:`build_prompt`): its text, and
        ``tokens_per_image`` for each image placeholder."""
        return prompt.count(self.image_token) * self.tokens_per_image + self.text_tokens(prompt)

    def check_fits(
        self,
        n_images: int,
        questions: str | Sequence[str],
        system: str | None = None,
        *,
        max_new_tokens: int = 0,
        segments: Sequence[Segment] | None = None,
    ) -> None:
        """Raise :class:`PromptError` (with the numbers and the largest n that fits) when the
        prompt of any question, plus ``max_new_tokens``, exceeds the context window."""
        qs = [questions] if isinstance(questions, str) else list(questions)
        if not qs:
            raise PromptError("no question to ask")
        text = max(self.text_tokens(self.build_prompt(n_images, q, system, segments)) for q in qs)
        self.check_budget(n_images, text, max_new_tokens=max_new_tokens)

    def check_budget(self, n_images: int, text_tokens: int, *, max_new_tokens: int = 0) -> None:
        """Raise :class:`PromptError` (with the numbers and the largest n that fits) when
        ``n_images`` frames, ``text_tokens`` tokens of text (the longest question's prompt,
        placeholders not counted) and ``max_new_tokens`` exceed the context window."""
        text = text_tokens
        need = n_images * self.tokens_per_image + text + max_new_tokens
        if need <= self.context_window:
            return
        fit = (self.context_window - text - max_new_tokens) // self.tokens_per_image
        new = f" + {max_new_tokens} new tokens" if max_new_tokens else ""
        hint = (
            f"at most {max(fit, 0)} frames fit"
            if fit >= 1
            else "not even one frame fits: shorten the question or max_new_tokens"
        )
        raise PromptError(
            f"{n_images} frames x {self.tokens_per_image} tokens + {text} text tokens{new} = "
            f"{need} tokens > the {self.context_window}-token context of {self.cfg.model}; "
            f"{hint}"
        )

    def max_images(
        self,
        questions: str | Sequence[str],
        system: str | None = None,
        *,
        max_new_tokens: int = 0,
    ) -> int:
        """The largest number of frames whose prompt (every question) fits the window."""
        qs = [questions] if isinstance(questions, str) else list(questions)
        text = max(self.text_tokens(self.build_prompt(1, q, system)) for q in qs)
        return max(0, (self.context_window - text - max_new_tokens) // self.tokens_per_image)

    def generation_config(self) -> Any:
        """The model's own ``GenerationConfig`` (its ``generation_config.json``, else the one
        transformers derives from its config), as the loaded model has it."""
        from transformers import GenerationConfig

        kwargs = {k: v for k, v in self.load_kwargs.items() if k != "trust_remote_code"}
        try:
            with quiet_hf():
                return GenerationConfig.from_pretrained(self.source, **kwargs)
        except OSError:  # no generation_config.json
            return GenerationConfig.from_model_config(self.config)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.cfg.model,
            "revision": self.revision,
            "path": str(self.local_dir) if self.local_dir is not None else None,
            "random_weights": self.random_weights,
            "tokens_per_image": self.tokens_per_image,
            "context_window": self.context_window,
        }

    def __repr__(self) -> str:
        return (
            f"ModelSpec({self.cfg.model!r}, tokens_per_image={self.tokens_per_image}, "
            f"context_window={self.context_window}, random_weights={self.random_weights})"
        )


class PixelValues:
    """The model's image preprocessing as a picklable step: frames in, their pixel values
    (float32 N x 3 x H x W, a :class:`~framepipe.generate.config.Prepared`) out, exactly
    what the generator would make of them itself. It runs where clips are decoded, so the
    process that drives the model never waits on it."""

    def __init__(self, spec: ModelSpec) -> None:
        self.image_processor = spec.processor.image_processor

    def __call__(self, images: Sequence[np.ndarray]) -> Prepared:
        arrays = [np.asarray(im) for im in images]
        out = self.image_processor(images=arrays, return_tensors="np")["pixel_values"]
        return Prepared(len(arrays), np.asarray(out))


def tokens_per_image(config: Any) -> int:
    """Tokens one image becomes, from the model's config: ``(image_size / patch_size)^2``
    patches, plus a class token for towers that have one (CLIP), minus one when the
    ``default`` feature strategy drops the first token."""
    vc = config.vision_config
    n = (int(vc.image_size) // int(vc.patch_size)) ** 2
    if getattr(vc, "model_type", "") in _CLS_TOWERS:
        n += 1
    if getattr(config, "vision_feature_select_strategy", "full") == "default":
        n -= 1
    return n


def _processor_image_size(processor: Any) -> tuple[int, int] | None:
    ip = getattr(processor, "image_processor", None)
    for attr in ("crop_size", "size"):
        size = getattr(ip, attr, None)
        if isinstance(size, dict) and "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
    return None


def describe_model(spec: ModelSpec, runtime: Runtime) -> dict[str, Any]:
    """What a record says about a model, known before its weights load: id, revision or
    local path, dtype, device, quantization, attention kernel, and whether the weights are
    random."""
    return {
        **spec.describe(),
        "dtype": runtime.dtype_name,
        "device": str(runtime.device),
        "quantize": runtime.quantize,
        "attn": runtime.attn,
    }
