"""Choosing device, dtype, attention kernel and quantization, before any weight is loaded.

Every choice that cannot work on this machine (``--quantize`` without CUDA or bitsandbytes,
FlashAttention without flash-attn, ``--device cuda`` without a GPU) is a one-line error here,
so it surfaces before the model is read.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framepipe.errors import ConfigError
from framepipe.extras import check_extras, installed
from framepipe.generate.attention import register as register_cpu_sdpa

if TYPE_CHECKING:
    import torch

    from framepipe.generate.config import ModelConfig

log = logging.getLogger(__name__)

_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass(frozen=True)
class Runtime:
    """Resolved choices for one model load."""

    device: torch.device
    dtype: torch.dtype
    attn: str
    quantize: str | None

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def resolve_runtime(cfg: ModelConfig) -> Runtime:
    """Resolve ``cfg``'s device, dtype, attention and quantization; raises ConfigError or
    MissingDependencyError (one line) when a choice cannot work here."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    attn = resolve_attn(cfg.attn, device, dtype)
    check_quantize(cfg.quantize, device)
    return Runtime(device, dtype, attn, cfg.quantize)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA, then MPS, then CPU. An explicit device must be present."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device {name!r} is not a device ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: no CUDA GPU is available (torch {torch.__version__})"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type == "mps" and not _mps_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name!r}: framepipe runs on cpu, cuda or mps")
    return dev


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (Intel AMX or AVX-512 BF16)."""
    f = cpu_flags() if flags is None else flags
    return "amx_bf16" in f or "avx512_bf16" in f


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The compute capability of the CUDA ``device`` itself (not of the current device)."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes bfloat16 natively (Ampere, sm80, and newer).
    ``torch.cuda.is_bf16_supported()`` is not asked: by default it also counts the slow
    emulation of older GPUs (V100, T4), and it looks at the current device, not ``device``."""
    return cuda_capability(device) >= (8, 0)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on GPUs that have it natively (else float16); on CPUs, bfloat16
    with AMX or AVX-512 BF16, else float32."""
    import torch

    if name != "auto":
        if name not in _DTYPE_NAMES:
            raise ConfigError(f"--dtype {name!r} is not one of auto, float32, bfloat16, float16")
        dtype: torch.dtype = getattr(torch, _DTYPE_NAMES[name])
        if dtype == torch.float16 and device.type == "cpu":
            log.warning("float16 on CPU is slow and lossy; bfloat16 or float32 serve better")
        if dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
            log.warning("%s has no native bfloat16 (emulated, slow); float16 serves better", device)
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def flash_attn_installed() -> bool:
    return installed("flash_attn")


def resolve_attn(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """``auto``: FlashAttention 2 when flash-attn is installed and the model runs on a CUDA
    GPU of compute capability 8.0 or newer (what FlashAttention 2 needs) in float16/bfloat16,
    else PyTorch's SDPA."""
    import torch

    half = dtype in (torch.float16, torch.bfloat16)
    cuda = device.type == "cuda"
    if name == "auto":
        usable = cuda and half and flash_attn_installed() and cuda_capability(device) >= (8, 0)
        return "flash_attention_2" if usable else "sdpa"
    if name == "flash_attention_2":
        check_extras(attn=name)
        if not cuda:
            raise ConfigError(f"--attn flash_attention_2 needs a CUDA GPU (device is {device})")
        major, minor = cuda_capability(device)
        if major < 8:
            raise ConfigError(
                f"--attn flash_attention_2 needs a GPU of compute capability 8.0 or newer "
                f"({device} is {major}.{minor}); use --attn sdpa"
            )
        if not half:
            raise ConfigError(
                f"--attn flash_attention_2 needs float16 or bfloat16 (dtype is {dtype})"
            )
    elif name not in ("sdpa", "eager"):
        raise ConfigError(f"--attn {name!r} is not one of auto, sdpa, flash_attention_2, eager")
    return name


def check_quantize(quantize: str | None, device: torch.device) -> None:
    """``4bit``/``8bit`` need a CUDA device and bitsandbytes."""
    if quantize is None:
        return
    if quantize not in ("4bit", "8bit"):
        raise ConfigError(f"--quantize {quantize!r} is not one of 4bit, 8bit")
    if device.type != "cuda":
        raise ConfigError(f"--quantize {quantize} needs a CUDA GPU (device is {device})")
    check_extras(quantize=quantize)


def weights_kwargs(runtime: Runtime) -> dict[str, Any]:
    """``from_pretrained``'s keyword arguments that load a model's weights for ``runtime``:
    straight onto its device (no copy in host memory first), in its dtype, with its
    attention (on the CPU, SDPA with matmuls for the decoding steps' queries: see
    :mod:`framepipe.generate.attention`) and quantization."""
    attn = runtime.attn
    if attn == "sdpa" and runtime.device.type == "cpu":
        attn = register_cpu_sdpa()
    kwargs: dict[str, Any] = {
        "dtype": runtime.dtype,
        "attn_implementation": attn,
        "use_safetensors": True,
        "device_map": {"": runtime.device},
    }
    quant = quantization_config(runtime.quantize, runtime.dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    return kwargs


def quantization_config(quantize: str | None, dtype: torch.dtype) -> Any:
    """A ``BitsAndBytesConfig`` for ``quantize`` (None for none). The vision tower and the
    projector stay in ``dtype``: they are small and quantizing them costs accuracy."""
    if quantize is None:
        return None
    from transformers import BitsAndBytesConfig

    skip = ["vision_tower", "multi_modal_projector", "lm_head"]
    if quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
