"""Device, dtype and attention choices for CUDA GPUs, on a machine without one: the device
queries are monkeypatched to describe the GPUs (compute capability per device), so the
choices framepipe makes for a V100, a T4, an A100 or a mixed machine are checked here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from framepipe import extras
from framepipe.errors import ConfigError
from framepipe.generate import ModelConfig, resolve_runtime
from framepipe.generate import device as device_mod

V100, T4, A100, H100 = (7, 0), (7, 5), (8, 0), (9, 0)


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Pretend the machine has CUDA GPUs of the given compute capabilities (device 0 is the
    current one); ``torch.cuda.is_bf16_supported`` says yes, as it does for emulated
    bfloat16 by default, so it must not decide anything."""

    def install(*capabilities: tuple[int, int], flash: bool = False) -> None:
        def capability(device: Any = None) -> tuple[int, int]:
            index = torch.device(device).index if device is not None else 0
            return capabilities[index or 0]

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(device_mod, "flash_attn_installed", lambda: flash)
        real = extras.installed
        monkeypatch.setattr(extras, "installed", lambda m: flash if m == "flash_attn" else real(m))

    return install


@pytest.mark.parametrize(
    ("gpu", "dtype"),
    [(V100, torch.float16), (T4, torch.float16), (A100, torch.bfloat16), (H100, torch.bfloat16)],
)
def test_auto_dtype_is_bfloat16_only_where_the_gpu_has_it_natively(
    gpus: Callable[..., None], gpu: tuple[int, int], dtype: torch.dtype
) -> None:
    gpus(gpu)
    assert resolve_runtime(ModelConfig(device="cuda")).dtype == dtype


def test_auto_dtype_looks_at_the_device_asked_for_not_the_current_one(
    gpus: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    gpus(T4, A100)  # current device 0 is a T4
    assert resolve_runtime(ModelConfig(device="cuda:1")).dtype == torch.bfloat16
    assert resolve_runtime(ModelConfig(device="cuda:0")).dtype == torch.float16
    assert resolve_runtime(ModelConfig(device="cuda")).device == torch.device("cuda", 0)
    resolve_runtime(ModelConfig(device="cuda:0", dtype="bfloat16"))  # asked for: a warning
    assert "no native bfloat16" in caplog.text


def test_flash_attention_only_on_sm80_or_newer_in_half_precision(
    gpus: Callable[..., None],
) -> None:
    gpus(T4, A100, flash=True)
    assert resolve_runtime(ModelConfig(device="cuda:1")).attn == "flash_attention_2"
    assert resolve_runtime(ModelConfig(device="cuda:0")).attn == "sdpa"  # a T4: no
    assert resolve_runtime(ModelConfig(device="cuda:1", dtype="float32")).attn == "sdpa"
    with pytest.raises(ConfigError, match=r"compute capability 8\.0 or newer \(cuda:0 is 7\.5\)"):
        resolve_runtime(ModelConfig(device="cuda:0", attn="flash_attention_2"))
    with pytest.raises(ConfigError, match="needs float16 or bfloat16"):
        resolve_runtime(ModelConfig(device="cuda:1", dtype="float32", attn="flash_attention_2"))
    gpus(A100, flash=False)  # not installed: never chosen
    assert resolve_runtime(ModelConfig(device="cuda")).attn == "sdpa"


def test_an_int_device_is_taken_as_transformers_pipelines_take_it() -> None:
    """``device=0``, as transformers' pipelines take it, was refused ("--device '0' is not
    one of ..."): an int N is ``cuda:N`` and -1 the CPU."""
    assert ModelConfig(device=0).device == "cuda:0"  # type: ignore[arg-type]
    assert ModelConfig(device=1).device == "cuda:1"  # type: ignore[arg-type]
    assert ModelConfig(device=-1).device == "cpu"  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--device 'True'"):
        ModelConfig(device=True)  # type: ignore[arg-type]
