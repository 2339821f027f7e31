"""Plug-ins the engine and caption tests load inside worker processes (imported by name).

``misbehaving`` is a sampler that picks frames like ``uniform`` but, for inputs whose file
name says so, hangs (``hang``), crashes the process with a segfault (``segv``) or exits it
(``exit``), on every clip or on clip ``bad_clip`` only: the failures the local engine must
survive. ``slow`` sleeps a little first.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from framepipe.samplers.uniform import uniform
from framepipe.types import ClipSpec, Selection, SourceInfo


def misbehaving(info: SourceInfo, clip: ClipSpec, *, n: int, **params: Any) -> Selection:
    name = os.path.basename(info.id)
    bad_clip = params.pop("bad_clip", None)  # misbehave on this clip only (default: all)
    if bad_clip is not None and clip.index != bad_clip:
        name = ""
    if "hang" in name:
        time.sleep(3600)
    if "segv" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "exit" in name:
        os._exit(3)
    if "slow" in name:
        time.sleep(float(params.pop("delay_s", 0.3)))
    params.pop("delay_s", None)
    return uniform(info, clip, n=n, **params)
