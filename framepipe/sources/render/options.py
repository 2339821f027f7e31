"""The render source's option values: sizes, colours and finite numbers, each refused with a
one-line :class:`ConfigError` naming the option."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framepipe.errors import ConfigError

_NAMED_COLORS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
}


def parse_color(value: Any) -> np.ndarray:
    """``[r, g, b]`` (0..255), ``"#rrggbb"``, ``"r,g,b"`` or a name -> float32 (3,)."""
    v = value
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _NAMED_COLORS:
            v = _NAMED_COLORS[s]
        elif s.startswith("#") and len(s) == 7:
            try:
                v = [int(s[i : i + 2], 16) for i in (1, 3, 5)]
            except ValueError:
                v = None
        else:
            try:
                v = [float(x) for x in s.strip("[]()").split(",")]
            except ValueError:
                v = None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v, v, v]
    arr = np.asarray(v, dtype=np.float64) if isinstance(v, (list, tuple)) else None
    if arr is None or arr.shape != (3,) or not np.all((arr >= 0) & (arr <= 255)):
        raise ConfigError(f"background ({value!r}) must be [r, g, b] in 0..255, #rrggbb or a name")
    return arr.astype(np.float32)


def parse_size(value: Any) -> tuple[int, int]:
    if isinstance(value, str) and "x" in value.lower():
        value = value.lower().split("x")
    try:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            w, h = (_whole(x) for x in value)
        else:
            w = h = _whole(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"size ({value!r}) must be N, WxH or [W, H]") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ConfigError(f"size ({w}x{h}) must be between 16 and 8192 pixels per side")
    return w, h


def _whole(x: Any) -> int:
    """A whole number from an int, an integral float or a string of digits (ValueError else)."""
    if isinstance(x, bool):
        raise ValueError(x)
    f = float(x)
    if not math.isfinite(f) or f != int(f):
        raise ValueError(x)
    return int(f)


def integer(name: str, value: object, lo: int, hi: int) -> int:
    """A whole-number option in ``[lo, hi]``, or a one-line ConfigError naming it."""
    try:
        x = _whole(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} ({value!r}) must be a whole number") from None
    if not lo <= x <= hi:
        raise ConfigError(f"{name} ({value!r}) must be in [{lo}, {hi}]")
    return x


def number(name: str, value: object) -> float:
    """A finite number option, or a one-line ConfigError naming it."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} ({value!r}) must be a number") from None
    if not math.isfinite(x):
        raise ConfigError(f"{name} ({value!r}) must be finite")
    return x
