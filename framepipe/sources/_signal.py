"""A fast, low-resolution read of a video for shot detection (the "cheap signal").

Decoding dominates the cost of shot detection, so this module decodes as little as it can:

- :func:`read_signal` decodes a range of a video at a tiny size, by default asking the
  decoder to skip every B-frame (``skip_frame = BIDIR``). Nothing references a B-frame in
  most streams, so the I- and P-frames that remain decode correctly and cost a fraction of
  the whole (about a third of the frames of an x264 stream). The signal then has gaps: the
  indices of the frames that were decoded are returned with them.
- :func:`read_full_ranges` decodes every frame of a few short ranges (the neighbourhoods
  of candidate cuts), seeking to the keyframe before each and again skipping B-frames until
  the range begins, so that a cut is placed to the exact frame.

Frames are mapped to indices by their presentation timestamps against
``SourceInfo.timestamps_s``, so the indices agree with the video source's. Decoding errors
(a corrupt stretch) are logged and skipped: the frames that cannot be decoded are missing
from the result, never invented.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import DecodeError, SourceError
from framepipe.types import SkipMode, SmallFrames, SourceInfo

log = logging.getLogger(__name__)

_SKIP = {"none": "DEFAULT", "nonref": "NONREF", "bidir": "BIDIR"}


def merge(a: SmallFrames, b: SmallFrames) -> SmallFrames:
    """The union of two reads (frames of ``b`` win on equal indices), sorted by index."""
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    idx = np.concatenate([b.indices, a.indices])
    frames = np.concatenate([b.frames, a.frames])
    uniq, first = np.unique(idx, return_index=True)
    return SmallFrames(uniq, frames[first], a.errors + b.errors)


class _IndexMap:
    """Presentation time (stream ticks) -> frame index, tolerant to rounding."""

    def __init__(self, info: SourceInfo, time_base: float) -> None:
        if info.timestamps_s is None:
            raise SourceError(info.id, "no frame timestamps to map decoded frames to indices")
        self.ts = np.asarray(info.timestamps_s, dtype=np.float64)
        self.tb = time_base
        step = np.diff(self.ts)
        self.tol = 0.5 * float(np.min(step)) if len(step) else 1e-3

    def index(self, pts: int | None) -> int | None:
        if pts is None:
            return None
        t = pts * self.tb
        i = int(np.searchsorted(self.ts, t))
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self.ts) and abs(self.ts[j] - t) <= self.tol:
                best = j if best is None or abs(self.ts[j] - t) < abs(self.ts[best] - t) else best
        return best

    def ticks(self, index: int) -> int:
        return int(np.floor(self.ts[index] / self.tb + 1e-6))


def _open(path: Path) -> Any:
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"cannot open for the shot signal ({_reason(exc)})") from None


def _small(frame: Any, size: tuple[int, int], rotation: int) -> np.ndarray:
    """YUV (h x w x 3, as decoded: limited range) at ``size``.

    A fast bilinear scale to twice the size in yuv420p (no colour conversion), then a 2x2
    mean of the luma (cheap anti-aliasing: a plain fast scale aliases fine texture into false
    motion); the chroma planes of the doubled picture already have the target size.
    """
    w, h = size
    if rotation in (90, 270):
        w, h = h, w
    flat = (
        frame.reformat(width=2 * w, height=2 * h, format="yuv420p", interpolation="FAST_BILINEAR")
        .to_ndarray()
        .ravel()
    )
    n = 4 * w * h
    out = np.empty((h, w, 3), dtype=np.uint8)
    y = flat[:n].reshape(h, 2, w, 2).mean(axis=(1, 3), dtype=np.float32)
    out[..., 0] = (y + 0.5).astype(np.uint8)
    out[..., 1] = flat[n : n + w * h].reshape(h, w)
    out[..., 2] = flat[n + w * h : n + 2 * w * h].reshape(h, w)
    if rotation:
        out = np.ascontiguousarray(np.rot90(out, k=-rotation // 90))
    return out


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (... x 3) to limited-range BT.601 YUV uint8, like a decoder's output."""
    x = rgb.astype(np.float32)
    m = (
        np.array(
            [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
            dtype=np.float32,
        )
        / 255.0
    )
    yuv = x @ m.T + np.array([16.0, 128.0, 128.0], dtype=np.float32)
    return np.clip(yuv + 0.5, 0, 255).astype(np.uint8)


def _decode_packets(container: Any, stream: Any) -> Iterator[tuple[Any, list[Any] | None]]:
    """Yield ``(packet, frames)``; ``frames`` is None when the packet failed to decode."""
    import av

    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            log.warning("demuxing stopped early (%s)", _reason(exc))
            return
        try:
            yield packet, list(packet.decode())
        except av.error.FFmpegError as exc:
            log.debug("packet at pts %s failed to decode: %s", packet.pts, _reason(exc))
            yield packet, None


def read_signal(
    path: str | Path,
    info: SourceInfo,
    start: int,
    end: int,
    *,
    size: tuple[int, int] = (64, 36),
    skip: SkipMode = "bidir",
) -> SmallFrames:
    """Frames of ``[start, end)`` at ``size`` (width, height), dropping what ``skip`` allows.

    Returns the frames that were decoded and their indices (with ``skip="none"``, every
    frame that the stream holds). Raises :class:`DecodeError` when nothing decodes.
    """
    import av

    path = Path(path)
    if not 0 <= start < end <= info.num_frames:
        raise DecodeError(path, f"signal range [{start}, {end}) outside 0..{info.num_frames}")
    rotation = int(info.extra.get("rotation", 0) or 0) % 360
    container = _open(path)
    idx: list[int] = []
    frames: list[np.ndarray] = []
    errors = 0
    try:
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.skip_frame = _SKIP[skip]
        imap = _IndexMap(info, float(stream.time_base or 0) or 1 / 90000)
        if start > 0:
            container.seek(imap.ticks(start), stream=stream, backward=True, any_frame=False)
        done = False
        for _packet, decoded in _decode_packets(container, stream):
            if decoded is None:
                errors += 1
                continue
            for frame in decoded:
                i = imap.index(frame.pts)
                if i is None or i < start:
                    continue
                if i >= end:
                    done = True
                    break
                if idx and i <= idx[-1]:
                    continue
                idx.append(i)
                frames.append(_small(frame, size, rotation))
            if done:
                break
    except av.error.FFmpegError as exc:
        raise DecodeError(path, f"cannot decode the shot signal ({_reason(exc)})") from None
    finally:
        container.close()
    if not frames:
        raise DecodeError(path, f"no frame of [{start}, {end}) could be decoded")
    if errors:
        log.warning("%s: %d packet(s) could not be decoded; skipped", path, errors)
    return SmallFrames(np.asarray(idx, dtype=np.int64), np.stack(frames), errors)


def read_full_ranges(
    path: str | Path,
    info: SourceInfo,
    ranges: Sequence[tuple[int, int]],
    *,
    size: tuple[int, int] = (64, 36),
) -> SmallFrames:
    """Every frame of each ``[a, b)`` in ``ranges`` at ``size``.

    For each range the decoder seeks to the keyframe at or before ``a`` (unless it is
    already decoding before it), skips B-frames until the first packet presented at or
    after ``a`` (the B-frames of the range come after it in decoding order), then decodes
    everything until frame ``b - 1`` is out. Frames that do not decode are missing.
    """
    import av

    path = Path(path)
    spans = _merge_ranges(ranges, info.num_frames)
    if not spans:
        return SmallFrames(np.zeros(0, np.int64), np.zeros((0, size[1], size[0], 3), np.uint8))
    rotation = int(info.extra.get("rotation", 0) or 0) % 360
    keys = np.asarray(info.keyframe_indices or (0,), dtype=np.int64)
    out: dict[int, np.ndarray] = {}
    errors = 0
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        cc = stream.codec_context
        imap = _IndexMap(info, float(stream.time_base or 0) or 1 / 90000)
        packets: Iterator[tuple[Any, list[Any] | None]] | None = None
        last_out = -1  # last frame index the decoder produced
        for a, b in spans:
            k = int(keys[max(0, int(np.searchsorted(keys, a, side="right")) - 1)])
            if packets is None or k > last_out or last_out >= a:
                container.seek(imap.ticks(k), stream=stream, backward=True, any_frame=False)
                packets = _decode_packets(container, stream)
                last_out = -1
            cc.skip_frame = "BIDIR"
            a_ticks = imap.ticks(a)
            full = False
            done = False
            for packet, decoded in packets:
                if not full and packet.pts is not None and packet.pts >= a_ticks - 1:
                    cc.skip_frame = "DEFAULT"
                    full = True
                if decoded is None:
                    errors += 1
                    continue
                for frame in decoded:
                    i = imap.index(frame.pts)
                    if i is None:
                        continue
                    last_out = max(last_out, i)
                    if a <= i < b and i not in out:
                        out[i] = _small(frame, size, rotation)
                    if i >= b - 1:
                        done = True
                if done:
                    break
            if not done:  # end of stream: nothing more to read for later spans either
                packets = None
                last_out = -1
    except av.error.FFmpegError as exc:
        raise DecodeError(path, f"cannot decode around a cut ({_reason(exc)})") from None
    finally:
        container.close()
    if not out:
        return SmallFrames(
            np.zeros(0, np.int64), np.zeros((0, size[1], size[0], 3), np.uint8), errors
        )
    order = sorted(out)
    return SmallFrames(np.asarray(order, np.int64), np.stack([out[i] for i in order]), errors)


def _merge_ranges(ranges: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    spans = sorted((max(0, int(a)), min(n, int(b))) for a, b in ranges)
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(msg).split())
