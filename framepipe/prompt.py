"""The prompt assembler: questions and n frames -> the model's chat text, with exactly one
``<image>`` placeholder per frame.

The text goes through the processor's own chat template when the model has one (the
llava-interleave template puts all images of a turn first, then each text item after a
newline):

    <|im_start|>user\n<image><image>\nWhat are these?<|im_end|>\n<|im_start|>assistant\n

A system prompt is its own turn, ``<|im_start|>system\nTEXT<|im_end|>\n``, as in the Qwen chat
format. Interleaved layouts, where several sources share one turn and each is introduced by
its own text ("Video 1:" and its frames, "Reference image:" and one image ...), are written
inside the user turn the template makes, each source's placeholders right after its label:

    <|im_start|>user\nVideo 1: <image><image>\nReference image: <image>\nQUESTION<|im_end|>...

The context guard itself lives with the model (:class:`framepipe.generate.ModelSpec`), which
knows how many tokens one image costs; this module only builds text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from framepipe.errors import PromptError

IMAGE_TOKEN = "<image>"
"""The placeholder the processor expands into one image's tokens."""

_SYSTEM = "\u27e6framepipe:system\u27e7"
_BODY = "\u27e6framepipe:body\u27e7"


@dataclass(frozen=True)
class Segment:
    """One source in an interleaved turn: a label, then that source's images."""

    text: str
    """The text that introduces the source, e.g. ``"Video 1:"`` or ``"Reference image:"``."""
    num_images: int
    """How many of the request's images (taken in order) belong to this source."""

    def __post_init__(self) -> None:
        if self.num_images < 0:
            raise PromptError(f"a segment's num_images ({self.num_images}) must be >= 0")


class ChatProcessor(Protocol):
    """What the assembler needs from a processor (a transformers ``ProcessorMixin``)."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def as_texts(question: str | Sequence[str]) -> list[str]:
    """A question as a list of text items (a plain string is one item); empty ones refused."""
    texts = [question] if isinstance(question, str) else list(question)
    if not texts:
        raise PromptError("a prompt needs at least one text item (the question)")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise PromptError(f"a question must be non-empty text, got {t!r}")
        _no_placeholder(t, "a question")
    return texts


def _no_placeholder(text: str, what: str) -> None:
    """Text may not contain the image placeholder: the model would look for a frame there."""
    if IMAGE_TOKEN in text:
        raise PromptError(
            f"{what} contains {IMAGE_TOKEN}, the model's image placeholder "
            f"(reword it, e.g. 'image'): {text[:80]!r}"
        )


def control_tokens(processor: Any) -> list[str]:
    """The special tokens of ``processor``'s tokenizer (``<|im_end|>``, ``<|endoftext|>`` ...):
    written in a text, the tokenizer reads them as the model's control tokens, not as text."""
    tok = getattr(processor, "tokenizer", None)
    if tok is None:
        return []
    found = set(getattr(tok, "all_special_tokens", None) or ())
    decoder = getattr(tok, "added_tokens_decoder", None) or {}
    found |= {str(t) for t in decoder.values() if getattr(t, "special", False)}
    return sorted(t for t in found if t.strip())


def _no_control_tokens(processor: Any, texts: Sequence[str]) -> None:
    """The user's texts may not hold the model's special tokens: they would end the turn,
    start another or end the text where the prompt's structure says otherwise."""
    tokens = control_tokens(processor) if processor is not None else []
    for text in texts:
        hit = next((t for t in tokens if t in text), None)
        if hit is not None:
            raise PromptError(
                f"the text {text[:80]!r} contains {hit}, one of the model's special tokens "
                "(it would change the prompt's structure): reword it"
            )


def build_messages(
    n_images: int, question: str | Sequence[str], system: str | None = None
) -> list[dict[str, Any]]:
    """The chat as the processor's template expects it: an optional system turn, then one
    user turn with ``n_images`` image items followed by the text item(s)."""
    if n_images < 0:
        raise PromptError(f"n_images ({n_images}) must be >= 0")
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content += [{"type": "text", "text": t} for t in as_texts(question)]
    messages: list[dict[str, Any]] = []
    if system is not None:
        if not system.strip():
            raise PromptError("the system prompt is empty")
        _no_placeholder(system, "the system prompt")
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": content})
    return messages


def segments_body(segments: Sequence[Segment], texts: Sequence[str]) -> str:
    """The user turn's body for an interleaved layout: each segment's label followed by its
    placeholders (``Video 1: <image><image>``), one segment per line, then the text items,
    one per line."""
    lines = [_label(s.text) + IMAGE_TOKEN * s.num_images for s in segments]
    return "\n".join([*lines, *texts])


def _label(text: str) -> str:
    """A segment's label and the space before its images (none after a newline or space)."""
    return text if not text or text[-1].isspace() else text + " "


def render_prompt(
    processor: ChatProcessor | None,
    n_images: int,
    question: str | Sequence[str],
    system: str | None = None,
    segments: Sequence[Segment] | None = None,
) -> str:
    """The full prompt text (ending with the assistant's turn header) for ``n_images`` frames.

    With ``segments``, their ``num_images`` must add up to ``n_images``. Without a chat
    template, a plain ``USER: ... ASSISTANT:`` layout is used (older LLaVA checkpoints).
    """
    texts = as_texts(question)
    if segments is not None:
        total = sum(s.num_images for s in segments)
        if total != n_images:
            raise PromptError(f"the segments hold {total} images but the request has {n_images}")
        for seg in segments:
            _no_placeholder(seg.text, "a segment's text")
    if system is not None:
        if not system.strip():
            raise PromptError("the system prompt is empty")
        _no_placeholder(system, "the system prompt")
    _no_control_tokens(processor, [*texts, system or "", *(s.text for s in segments or ())])
    template = getattr(processor, "chat_template", None) if processor is not None else None
    if not template:
        return _plain_prompt(n_images, texts, system, segments)
    assert processor is not None
    # Turns that the template cannot lay out as intended get a stand-in text item, replaced
    # afterwards: the system turn (the llava-interleave template would put a newline before
    # its text, unlike the Qwen chat format the model was trained on) and an interleaved
    # user turn (the template hoists every image of a turn before its text, which would pull
    # the sources apart from their labels).
    subs: dict[str, str] = {}
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": _SYSTEM}]})
        subs[_SYSTEM] = system
    if segments is None:
        messages += build_messages(n_images, texts)
    else:
        messages.append({"role": "user", "content": [{"type": "text", "text": _BODY}]})
        subs[_BODY] = segments_body(segments, texts)
    text = _one_text(
        processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    )
    for key, value in subs.items():
        if "\n" + key in text:
            text = text.replace("\n" + key, value, 1)
        elif key in text:
            text = text.replace(key, value, 1)
        else:
            raise PromptError("the model's chat template drops the text of a turn")
    return text


def _one_text(text: Any) -> str:
    if isinstance(text, list):
        if len(text) != 1:
            raise PromptError(f"the chat template returned {len(text)} texts for one chat")
        text = text[0]
    if not isinstance(text, str):
        raise PromptError(f"the chat template returned {type(text).__name__}, not text")
    return text


def user_body(n_images: int, texts: Sequence[str], segments: Sequence[Segment] | None) -> str:
    """The user turn's content as text: the images as placeholders (each source's after its
    label), then the text items, one per line."""
    if segments is not None:
        return segments_body(segments, texts)
    return IMAGE_TOKEN * n_images + "\n" + "\n".join(texts)


def _plain_prompt(
    n_images: int, texts: Sequence[str], system: str | None, segments: Sequence[Segment] | None
) -> str:
    head = f"{system}\n" if system else ""
    return f"{head}USER: {user_body(n_images, texts, segments)} ASSISTANT:"
