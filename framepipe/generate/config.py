"""What the generator is asked to do: which model and how to run it (:class:`ModelConfig`),
how to decode (:class:`GenerationSettings`), and the requests and answers themselves."""

from __future__ import annotations

import hashlib
import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from framepipe.errors import ConfigError, PromptError, check_fields
from framepipe.prompt import Segment, as_texts

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llava-hf/llava-interleave-qwen-0.5b-hf"
"""The model used when none is given (see ``shared/MODEL_FACTS.md``)."""

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = ("4bit", "8bit")
ATTN = ("auto", "sdpa", "flash_attention_2", "eager")


OTHER_NAMES = {
    "torch_dtype": "dtype=",
    "device_map": "device=",
    "attn_implementation": "attn=",
    "load_in_4bit": "quantize='4bit'",
    "load_in_8bit": "quantize='8bit'",
    "quantization_config": "quantize='4bit' or '8bit'",
    "pretrained_model_name_or_path": "model=",
    "model_id": "model=",
    "model_name": "model=",
    "max_tokens": "max_new_tokens=",
    "max_length": "max_new_tokens= (it counts the answer's tokens only)",
}
"""Names a transformers (or OpenAI) user plausibly gives a config here, and framepipe's own
for them: refused with a pointer to it (never taken in its place: the keys stay one)."""


def refuse_other_names(cls: type, given: Any) -> None:
    """TypeError, in one line naming framepipe's own spelling, when the keywords ``given`` to
    ``cls`` hold one of :data:`OTHER_NAMES` (Python's own would not say what is meant)."""
    names = {f.name for f in fields(cls)}
    for name in sorted(given):
        if name in OTHER_NAMES and name not in names:
            raise TypeError(
                f"{cls.__name__}() got an unexpected keyword argument {name!r}: "
                f"framepipe's is {OTHER_NAMES[name]}"
            )


RANDOM_WEIGHTS_KEY = "framepipe_random_weights"
"""Config attribute that marks a model whose weights are random (see
:func:`framepipe.generate.is_random`)."""


@dataclass
class ModelConfig:
    """Which model to load and how. Validated by :func:`framepipe.generate.resolve_runtime`
    (device, dtype, attention, quantization) and :meth:`ModelSpec.inspect` (the model)."""

    model: str = DEFAULT_MODEL
    """A Hugging Face hub id or a local folder written by ``save_pretrained``."""
    revision: str | None = None
    """Hub branch, tag or commit (ignored for a local folder)."""
    device: str = "auto"
    """``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (a
    ``torch.device`` is taken by its name; an int as transformers' pipelines take it: ``N``
    is ``cuda:N``, ``-1`` the CPU)."""
    dtype: str = "auto"
    """``auto`` (bfloat16 where the hardware has it, else float16 on GPUs, float32 on CPUs),
    ``float32``, ``bfloat16`` or ``float16`` (a ``torch.dtype`` is taken by its name)."""
    quantize: str | None = None
    """``4bit`` or ``8bit`` through bitsandbytes (CUDA only), or None."""
    attn: str = "auto"
    """``auto`` (FlashAttention 2 when installed and usable, else SDPA), ``sdpa``,
    ``flash_attention_2`` or ``eager``."""
    trust_remote_code: bool = False
    """Run code shipped with the model (never unless asked)."""
    local_files_only: bool | None = None
    """True: never contact the hub. None: follow ``HF_HUB_OFFLINE``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ModelConfig:
        refuse_other_names(cls, kwargs)  # ModelConfig(torch_dtype=...): say it is dtype=
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):  # a folder as a Path: its name, as the CLI's
            self.model = os.fspath(self.model)
        if not self.model or not str(self.model).strip():
            raise ConfigError("--model is empty")
        # torch.bfloat16 / torch.device("cuda", 1), as transformers takes them: their names
        self.dtype = str(self.dtype).removeprefix("torch.")
        if isinstance(self.device, int) and not isinstance(self.device, bool):
            self.device = "cpu" if self.device == -1 else f"cuda:{self.device}"
        self.device = str(self.device)
        if self.dtype not in DTYPES:
            aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
            if self.dtype not in aliases:
                raise ConfigError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
            self.dtype = aliases[self.dtype]
        dev = self.device.split(":", 1)[0]
        if dev not in DEVICES:
            raise ConfigError(f"--device {self.device!r} is not one of auto, cpu, cuda[:N], mps")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ConfigError(f"--quantize {self.quantize!r} is not one of {', '.join(QUANTIZE)}")
        if self.attn not in ATTN:
            raise ConfigError(f"--attn {self.attn!r} is not one of {', '.join(ATTN)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_SHAPING = ("max_new_tokens", "do_sample", "num_beams", "repetition_penalty")
"""The settings that shape every answer."""
_SAMPLING = ("temperature", "top_p", "top_k", "seed")
"""The settings that shape answers only when sampling."""


@dataclass
class GenerationSettings:
    """How answers are decoded. Greedy by default (the same inputs give the same answers)."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    num_beams: int = 1
    repetition_penalty: float = 1.0
    seed: int | None = 0
    """Seed of the sampler: each answer draws from its own stream, seeded from it, its clip
    and its question (:func:`answer_seed`), whatever the batch; None: torch's global RNG
    (not reproducible)."""
    batch_size: int = 4
    """Sequences generated together (clips x questions); halved on CUDA out-of-memory."""

    def __new__(cls, *args: Any, **kwargs: Any) -> GenerationSettings:
        refuse_other_names(cls, kwargs)  # GenerationSettings(max_tokens=...): max_new_tokens=
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for f in fields(self):  # a dict or JSON file's "8" or a numpy int, as plain types
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and kind.endswith("None"):
                continue
            flag = f"--{f.name.replace('_', '-')}"
            if kind == "bool":
                if not isinstance(value, (bool, np.bool_)):
                    raise ConfigError(f"{flag} ({value!r}) must be true or false")
                setattr(self, f.name, bool(value))
            elif kind == "float":
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                    raise ConfigError(f"{flag} ({value!r}) must be a number")
                # 1 is 1.0 (as the command line and the defaults give it): one resume key
                setattr(self, f.name, float(value))
            elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{flag} ({value!r}) must be an integer")
            else:
                setattr(self, f.name, int(value))
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens ({self.max_new_tokens}) must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size ({self.batch_size}) must be >= 1")
        if self.num_beams < 1:
            raise ConfigError(f"--num-beams ({self.num_beams}) must be >= 1")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature ({self.temperature}) must be > 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p ({self.top_p}) must be in (0, 1]")
        if self.top_k < 0:
            raise ConfigError(f"--top-k ({self.top_k}) must be >= 0")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"--repetition-penalty ({self.repetition_penalty}) must be > 0")
        if self.do_sample and self.seed is not None and self.num_beams > 1:
            raise ConfigError(
                f"--num-beams ({self.num_beams}) with --do-sample: seeded sampling draws each "
                "answer from its own stream, which beam search (drawing its beams jointly) "
                "cannot; use --num-beams 1, or beams without --do-sample"
            )

    def to_json(self) -> dict[str, Any]:
        """The settings that shape the answers (for the record and the resume key); the
        sampling knobs only when sampling, since greedy decoding ignores them."""
        names = _SHAPING + (_SAMPLING if self.do_sample else ())
        return {name: getattr(self, name) for name in names}


TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
"""The token ids a model's own ``GenerationConfig`` sets: a backend that runs the model
decodes with the model's own, so a GenerationConfig given as settings may hold them when
they are the model's (checked before any work: :func:`check_token_ids`)."""


def as_settings(
    value: Any, what: str = "settings", *, token_ids: bool = False
) -> GenerationSettings | None:
    """The :class:`GenerationSettings` from what a caller plausibly passes as ``what``: the
    settings, None, a dict of their fields, or transformers' ``GenerationConfig`` (the
    fields it sets; ConfigError naming one it sets that framepipe has not, such as
    ``forced_eos_token_id``, which would not be applied; its :data:`TOKEN_IDS` are left to
    the caller with ``token_ids``: see :func:`given_token_ids`); a TypeError for anything
    else."""
    if value is None or isinstance(value, GenerationSettings):
        return value
    if is_generation_config(value):
        skip = {"transformers_version", *(TOKEN_IDS if token_ids else ())}
        value = {k: v for k, v in value.to_diff_dict().items() if k not in skip}
        what = f"{what} (a GenerationConfig)"
    if isinstance(value, Mapping):  # settings={"max_new_tokens": 64}
        try:
            check_fields(GenerationSettings, value, what)
        except ConfigError as exc:  # GenerationConfig(max_length=): say framepipe's name
            other = sorted(k for k in map(str, value) if k in OTHER_NAMES)
            if not other:
                raise
            hint = f"; framepipe's for {other[0]!r} is {OTHER_NAMES[other[0]]}"
            raise ConfigError(f"{exc}{hint}") from None
        return GenerationSettings(**value)
    raise TypeError(
        f"{what} must be a framepipe.generate.GenerationSettings, a dict of its fields or a "
        f"transformers GenerationConfig, not {type(value).__name__}"
    )


def is_generation_config(value: Any) -> bool:
    """Whether ``value`` is transformers' ``GenerationConfig`` (without importing it)."""
    return type(value).__name__ == "GenerationConfig" and hasattr(value, "to_diff_dict")


def given_token_ids(value: Any) -> dict[str, list[int]]:
    """The :data:`TOKEN_IDS` that ``value``, a ``GenerationConfig``, sets (each as a list:
    ``eos_token_id`` may be one id or several); none for anything else."""
    if not is_generation_config(value):
        return {}
    diff = value.to_diff_dict()
    return {k: as_ids(diff[k]) for k in TOKEN_IDS if diff.get(k) is not None}


def as_ids(value: Any) -> list[int]:
    """A token id, or several, as a sorted list of ints (None: none)."""
    if value is None:
        return []
    return sorted({int(v) for v in (value if isinstance(value, (list, tuple)) else [value])})


def check_token_ids(given: Mapping[str, list[int]], own: Any, model: str) -> None:
    """ConfigError unless each token id ``given`` (see :func:`given_token_ids`) is ``own``'s
    (the model's own ``GenerationConfig``), which is what a backend decodes with: another
    end-of-answer or padding token would not be applied."""
    for name, ids in given.items():
        theirs = as_ids(getattr(own, name, None))
        if ids != theirs:
            shown = ids[0] if len(ids) == 1 else ids
            raise ConfigError(
                f"settings (a GenerationConfig): {name} {shown} is not {model}'s own "
                f"({theirs[0] if len(theirs) == 1 else theirs or 'none'}); framepipe decodes "
                "with the model's own token ids (leave it out)"
            )
        log.debug("settings (a GenerationConfig): %s is %s's own", name, model)


@dataclass(frozen=True)
class Prepared:
    """A clip's frames as a backend's prepare step made them, where they were decoded (see
    :meth:`~framepipe.generate.backend.BackendSpec.prepare`): the transformers backend's
    pixel values, the openai backend's encoded images."""

    count: int
    """How many frames."""
    data: Any
    """The frames in the backend's own form."""

    def __len__(self) -> int:
        return self.count


@dataclass
class Request:
    """One clip's question(s): its frames and what to ask about them."""

    images: Sequence[np.ndarray] | Prepared
    """uint8 HxWx3 RGB frames, in the order the model sees them (or the backend's own
    :class:`Prepared` form of them)."""
    questions: Sequence[str]
    """One answer per question; all questions share the frames' encoding."""
    system: str | None = None
    """An optional system prompt."""
    segments: Sequence[Segment] | None = None
    """Optional interleaved layout: several sources in one turn, each with its label; their
    ``num_images`` add up to ``len(images)``."""

    key: str | None = None
    """A stable identity of the request (the clip's record key): what seeds its sampled
    answers (:meth:`identity`). None: one made from the request's content."""

    def __post_init__(self) -> None:
        if isinstance(self.questions, str):
            self.questions = [self.questions]
        as_texts(list(self.questions))  # raises PromptError on an empty question
        for img in () if isinstance(self.images, Prepared) else self.images:
            a = np.asarray(img)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise PromptError(f"images must be uint8 HxWx3, got {a.dtype} {a.shape}")
        if self.segments is not None:
            total = sum(s.num_images for s in self.segments)
            if total != len(self.images):
                raise PromptError(
                    f"the segments hold {total} images but the request has {len(self.images)}"
                )

    def identity(self) -> str:
        """What seeds this request's sampled answers (:func:`answer_seed`): ``key``, else a
        digest of the frames, questions, system prompt and layout, so that the same request
        draws the same answers whatever requests share its batch."""
        if self.key is not None:
            return self.key
        h = hashlib.sha256()
        data = self.images.data if isinstance(self.images, Prepared) else self.images
        for part in data if isinstance(data, (list, tuple)) else [data]:
            h.update(part.encode() if isinstance(part, str) else np.asarray(part).tobytes())
        extra = [list(self.questions), self.system, [str(s) for s in self.segments or ()]]
        h.update(repr(extra).encode())
        return h.hexdigest()


def answer_seed(seed: int, identity: str, question: int) -> int:
    """The seed of one sampled answer: a digest of the run's ``seed``, the request's
    ``identity`` (:meth:`Request.identity`) and the question's index, as a non-negative
    63-bit integer (what torch generators and servers take). Never Python's ``hash()``,
    which differs between processes."""
    text = f"{int(seed)}\0{identity}\0{int(question)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


@dataclass
class Answer:
    """The answers to one :class:`Request`, in the order of its questions."""

    prompt: str
    """The prompt text of the first question (``<image>`` placeholders not expanded)."""
    answers: list[str]
    generate_s: float
    """Seconds of generation attributed to this request (its share of its batches)."""
    prompt_tokens: int | None
    """Tokens of the first question's prompt, image tokens included (None: not known, e.g.
    a server that sent no counts)."""
    new_tokens: list[int] | None
    """Tokens generated per answer, the end-of-turn token not counted (None: not known)."""
    prompts: list[str] = field(default_factory=list)
    """The prompt text of every question."""
    batch_size: int | None = None
    """The most sequences decoded together with this request's (its effective batch size:
    in half precision the answers may depend on it); None where the backend cannot tell."""
    truncated: list[bool | None] | None = None
    """Per answer: True where it stopped at ``max_new_tokens`` (cut off), False where the
    model ended it, None where the backend cannot tell (None for all: not known)."""
