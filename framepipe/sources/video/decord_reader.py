"""decord as a reader, and the checks that decide whether it may read a file.

decord 0.6 returns wrong frames on some files and can loop forever in native code on others,
so it only gets files it is known to read right, decided from the PyAV index before decord
ever opens the file, then confirmed by comparing decord's own frame count and timestamps
with the index.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from framepipe.errors import DecodeError
from framepipe.sources.video.index import VideoIndex

log = logging.getLogger(__name__)

# Codecs decord seeks wrongly in (VP8/VP9 in WebM: frames off after a seek).
_UNSAFE_CODECS = frozenset({"vp8", "vp9", "av1"})


def import_decord() -> Any:
    """Import decord after PyAV: decord's bundled FFmpeg libraries, loaded first, break
    PyAV's libvpx encoder in the same process (observed with decord 0.6, PyAV 18)."""
    import av  # noqa: F401
    import decord

    return decord


def decord_available() -> bool:
    try:
        import_decord()
    except ImportError:
        return False
    return True


# "[12:34:56] /path/to/video_reader.cc:151: " before decord's own words
_DECORD_PREFIX = re.compile(r"^(\[[0-9:]+\]\s*)?\S+\.(cc|h|cpp):\d+:\s*")


def decord_reason(exc: BaseException, limit: int = 160) -> str:
    """A decord exception as one short line: its message without the source location
    and the native stack trace that DECORDError carries."""
    text = str(exc).split("Stack trace")[0]
    text = " ".join(text.split())
    text = _DECORD_PREFIX.sub("", text)
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decord_refusal(index: VideoIndex) -> str | None:
    """Why decord must not read this file (None when it may), from the index alone."""
    if index.codec in _UNSAFE_CODECS:
        return f"decord seeks {index.codec} wrongly"
    if index.header_frames and index.header_frames != index.num_frames:
        return (
            f"the header claims {index.header_frames} frames but {index.num_frames} decode "
            "(decord may loop forever)"
        )
    if index.truncated:
        return "the file is cut short (decord may loop on missing frames)"
    if index.damaged:
        return "damaged stream (decord fills in what is lost differently from a full decode)"
    if index.container == "avi" and index.reordered:
        return "decord returns AVI frames with B-frames out of order"
    if index.order != "timestamps":
        return (
            "the container's timestamps do not give the decoder's frame order, which decord "
            "follows (the PyAV reader takes frames as the decoder outputs them)"
        )
    if index.rotation:
        return "rotated video (decoded upright by the PyAV reader)"
    if index.alpha:
        return "video with alpha (decord drops it; the PyAV reader composites it)"
    if index.leading_dropped:
        return "the first frames do not decode"
    return None


class DecordReader:
    """Reads frames with ``decord.VideoReader`` (full size) after confirming it agrees."""

    def __init__(self, index: VideoIndex, *, threads: int = 0) -> None:
        self.index = index
        self.threads = threads
        self._vr: Any = None

    def confirm(self) -> str | None:
        """Open decord and compare its count and timestamps with the index; None when fine."""
        vr = self._reader()
        n = len(vr)
        if n != self.index.num_frames:
            return f"decord counts {n} frames, the index {self.index.num_frames}"
        ts = np.asarray(vr.get_frame_timestamp(range(n)))[:, 0]
        ref = np.asarray(self.index.timestamps_s, dtype=np.float64)
        step = float(np.median(np.diff(ref))) if n > 1 else 0.04
        tol = max(step / 2, 1e-3)
        # decord counts from the stream's start: a file whose first frame is not at 0 s (a
        # delayed start, a fragmented MP4, a Matroska offset) agrees once that is taken off
        if not any(np.all(np.abs(ts - r) <= tol) for r in (ref, ref - ref[:1])):
            return "decord's timestamps disagree with the container's"
        return None

    def _reader(self) -> Any:
        if self._vr is None:
            decord = import_decord()

            self._vr = decord.VideoReader(
                str(self.index.path), ctx=decord.cpu(0), num_threads=self.threads
            )
        return self._vr

    def read(self, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        """Frames ``wanted`` by index; a decord failure is a one-line :class:`DecodeError`."""
        decord = import_decord()
        uniq = sorted(set(int(i) for i in wanted))
        try:
            arr = self._reader().get_batch(uniq).asnumpy()
        except (RuntimeError, decord.DECORDError) as exc:
            shown = ", ".join(map(str, uniq[:5])) + (", ..." if len(uniq) > 5 else "")
            raise DecodeError(
                self.index.path, f"decord failed on frame(s) [{shown}] ({decord_reason(exc)})"
            ) from exc
        return {i: arr[k] for k, i in enumerate(uniq)}

    def close(self) -> None:
        self._vr = None
