"""A fast, low-resolution read of a video for shot detection (the "cheap signal").

Decoding dominates the cost of shot detection, so this module decodes as little as it can:

- :func:`read_signal` decodes a range of a video at a tiny size, by default asking the
  decoder to skip the frames nothing refers to (``skip_frame = NONREF``: most B-frames),
  so that every frame it outputs is the frame a full decode outputs, at a fraction of the
  cost (about half the frames of an x264 stream). The signal then has gaps: the indices of
  the frames that were decoded are returned with them. ``skip="bidir"`` (every B-frame,
  fastest) is exact only where no B-frame is a reference: x264 at ffmpeg's default preset
  (``medium``: B-pyramid, three reference frames) makes P-frames that refer to B-frames, and
  with them skipped the P-frames decode wrong until the next keyframe (72 of 86 signal
  frames of a 12 s clip off by up to 12 levels on average); HEVC's decoder, told so, skips
  the referenced B-frames x265 makes and outputs nothing until the next keyframe, so HEVC
  skips only frames nothing refers to whatever is asked (see :data:`NO_BIDIR_SKIP`).
- :func:`read_full_ranges` decodes every frame of a few short ranges (the neighbourhoods
  of candidate cuts), seeking to the keyframe before each and skipping only frames nothing
  refers to until the range begins, so that a cut is placed to the exact frame.

Frames are mapped to indices as the video source's reader maps them: every packet is
labelled with its decode position and a frame is the frame of the packet that made it in the
file's index (:mod:`framepipe.sources.video.index`), so the indices are those of a full
sequential decode whatever the container's timestamps say. Frames must come out in index
order; when they do not, an index built from the container's timestamps is rebuilt from a
full decode. Streams with packed B-frames are decoded without skipping (a decoder told to
skip there decodes other pictures in their place); the exact ranges of a damaged stream
(MPEG-TS packet loss) as a full decode decodes it (threads, no skipping: see
:func:`framepipe.sources.video.decode.plain_decoder`). Decoding errors (a corrupt stretch) are
logged and skipped: the frames that cannot be decoded are missing from the result, never
invented.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from framepipe.errors import DecodeError, SourceError
from framepipe.sources.video.decode import open_decoder, plain_decoder
from framepipe.sources.video.index import IndexMismatch, VideoIndex, load_index, video_stream
from framepipe.sources.video.pyav import check_packet, next_packet, seek_to
from framepipe.types import SkipMode, SmallFrames, SourceInfo

T = TypeVar("T")

log = logging.getLogger(__name__)

_SKIP = {"none": "DEFAULT", "nonref": "NONREF", "bidir": "BIDIR"}

NO_BIDIR_SKIP = frozenset({"hevc"})
"""Codecs whose decoder, told to skip B-frames, skips those that other frames refer to as
well, so that nothing after the first one comes out until the next keyframe (HEVC: x265
makes referenced B-frames by default). Their signal skips only frames nothing refers to."""


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


def _with_index(
    path: Path, info: SourceInfo, index: VideoIndex | None, read: Callable[[VideoIndex], T]
) -> T:
    """``read(index)`` with the file's index (the shared one when not given), once more
    with an index from a full decode when the decoder disagrees with the timestamps'."""
    idx = index if index is not None else load_index(path)
    if idx.num_frames != info.num_frames:
        raise SourceError(path, f"the index has {idx.num_frames} frames, info {info.num_frames}")
    try:
        return read(idx)
    except IndexMismatch as exc:
        if idx.order == "decoded":
            raise
        log.warning("%s; indexing it again by decoding every frame", exc)
        idx = load_index(path, rebuild=str(exc).split(": ", 1)[-1])
        if idx.num_frames != info.num_frames:
            raise DecodeError(
                path, f"a full decode gives {idx.num_frames} frames, not {info.num_frames}"
            ) from None
        return read(idx)


class _Labels:
    """Frame index of each decoded frame, from its label; checks the output order."""

    def __init__(self, index: VideoIndex) -> None:
        self.index = index
        self.frame_of = index.packet_frame
        self.last = -1

    def __call__(self, frame: Any) -> int:
        """The frame's index, or -1 for a frame no full decode outputs."""
        if not self.index.seekable:  # decoding from the start: the k-th frame out is frame k
            self.last += 1
            return self.last
        label = -1 if frame.pts is None else int(frame.pts)
        i = int(self.frame_of[label]) if 0 <= label < len(self.frame_of) else -1
        if i < 0:
            if self.index.order == "decoded":
                return -1
            raise IndexMismatch(self.index.path, f"the decoder put out an unknown frame ({label})")
        if i <= self.last:
            raise IndexMismatch(
                self.index.path, f"the decoder put out frame {i} after frame {self.last}"
            )
        self.last = i
        return i


def _labelled(
    container: Any, stream: Any, index: VideoIndex, key_pos: int
) -> Iterator[tuple[int, list[Any] | None]]:
    """From packet ``key_pos`` (or a keyframe before it) on: ``(decode position, frames)``
    for each packet, labelled; ``frames`` is None when the packet failed to decode."""
    import av

    if key_pos == 0:  # a freshly opened file: no seek
        demux: Any = container.demux(stream)
        packet = next_packet(demux)
        pos = 0
    else:
        landed = seek_to(container, stream, index, key_pos)
        if landed is None:
            return
        demux, packet, pos = landed
    try:  # a reader may stop before the end: see decode.decode_labels
        while packet is not None:
            check_packet(index, packet, pos)
            packet.pts = pos
            try:
                yield pos, list(stream.codec_context.decode(packet))
            except av.error.FFmpegError as exc:
                log.debug("packet %d failed to decode: %s", pos, _reason(exc))
                yield pos, None
            try:
                packet = next_packet(demux)
            except av.error.FFmpegError as exc:
                log.warning("demuxing stopped early (%s)", _reason(exc))
                return
            pos += 1
    finally:
        demux.close()
    try:
        yield pos, list(stream.codec_context.decode(None))
    except av.error.FFmpegError as exc:
        log.debug("draining the decoder failed: %s", _reason(exc))


def _open(path: Path) -> Any:
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"cannot open for the shot signal ({_reason(exc)})") from None


class _Shrink:
    """Decoded frames made small: YUV (h x w x 3, limited range) at ``size``.

    A fast bilinear scale to twice the size in limited-range yuv420p (no colour conversion
    for the usual limited-range video; full-range video and grey pictures are brought to
    the limited range that every other source's signal has), then a 2x2
    mean of the luma (cheap anti-aliasing: a plain fast scale aliases fine texture into false
    motion); the chroma planes of the doubled picture already have the target size. One
    ``VideoReformatter`` serves the whole read (a frame's own ``reformat`` sets up a new
    swscale context each time, which costs far more than the scaling itself), the planes are
    copied out as they come, and the luma is averaged for ``CHUNK`` frames at once (per
    frame, numpy's overhead cost more than the scaling).
    """

    CHUNK = 256

    def __init__(self, size: tuple[int, int], rotation: int) -> None:
        from av.video.reformatter import VideoReformatter

        w, h = size
        self.size = size
        if rotation in (90, 270):
            w, h = h, w
        self.w, self.h, self.rotation = w, h, rotation
        self.scaler = VideoReformatter()
        self.planes = [np.empty((self.CHUNK, 2 * h, 2 * w), np.uint8)]
        self.planes += [np.empty((self.CHUNK, h, w), np.uint8) for _ in range(2)]
        self.n = 0
        self.done: list[np.ndarray] = []

    def add(self, frame: Any) -> None:
        w, h = self.w, self.h
        scaled = self.scaler.reformat(
            frame,
            width=2 * w,
            height=2 * h,
            format="yuv420p",
            interpolation="FAST_BILINEAR",
            dst_color_range="MPEG",
        )
        for buf, plane in zip(self.planes, scaled.planes):
            rows, cols = buf.shape[1:]
            buf[self.n] = np.frombuffer(memoryview(plane), np.uint8).reshape(rows, -1)[:, :cols]
        self.n += 1
        if self.n == self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        n, w, h = self.n, self.w, self.h
        if not n:
            return
        y = self.planes[0][:n].reshape(n, h, 2, w, 2).astype(np.uint16)
        out = np.empty((n, h, w, 3), np.uint8)
        quad = y[:, :, 0, :, 0] + y[:, :, 0, :, 1] + y[:, :, 1, :, 0] + y[:, :, 1, :, 1]
        out[..., 0] = (quad + 2) >> 2  # the rounded mean of four levels
        out[..., 1] = self.planes[1][:n]
        out[..., 2] = self.planes[2][:n]
        if self.rotation:
            out = np.ascontiguousarray(np.rot90(out, k=-self.rotation // 90, axes=(1, 2)))
        self.done.append(out)
        self.n = 0

    def frames(self) -> np.ndarray:
        """Every frame added, in order."""
        self._flush()
        if not self.done:
            return np.zeros((0, self.size[1], self.size[0], 3), np.uint8)
        return self.done[0] if len(self.done) == 1 else np.concatenate(self.done)


def read_signal(
    path: str | Path,
    info: SourceInfo,
    start: int,
    end: int,
    *,
    size: tuple[int, int] = (64, 36),
    skip: SkipMode = "nonref",
    index: VideoIndex | None = None,
) -> SmallFrames:
    """Frames of ``[start, end)`` at ``size`` (width, height), dropping what ``skip`` allows.

    Returns the frames that were decoded and their indices (with ``skip="none"``, every
    frame that the stream holds). Raises :class:`DecodeError` when nothing decodes.
    ``index`` is the file's frame index (the one ``info`` was made from; by default the
    shared one, see :func:`framepipe.sources.video.index.load_index`).
    """
    path = Path(path)
    if not 0 <= start < end <= info.num_frames:
        raise DecodeError(path, f"signal range [{start}, {end}) outside 0..{info.num_frames}")
    return _with_index(
        path, info, index, lambda idx: _read_signal(path, idx, start, end, size, skip)
    )


def _read_signal(
    path: Path, index: VideoIndex, start: int, end: int, size: tuple[int, int], skip: SkipMode
) -> SmallFrames:
    import av

    if index.packed or not index.seekable:
        skip = "none"
    elif skip == "bidir" and index.codec in NO_BIDIR_SKIP:
        skip = "nonref"
    idx: list[int] = []
    small = _Shrink(size, index.rotation)
    errors = 0
    container = _open(path)
    try:
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        stream.codec_context.skip_frame = _SKIP[skip]
        label = _Labels(index)
        done = False
        for _pos, decoded in _labelled(container, stream, index, index.start_key_pos(start)):
            if decoded is None:
                errors += 1
                continue
            for frame in decoded:
                i = label(frame)
                if i < start:
                    continue
                if i >= end:
                    done = True
                    break
                idx.append(i)
                small.add(frame)
            if done:
                break
    except av.error.FFmpegError as exc:
        raise DecodeError(path, f"cannot decode the shot signal ({_reason(exc)})") from None
    finally:
        container.close()
    if not idx:
        raise DecodeError(path, f"no frame of [{start}, {end}) could be decoded")
    if errors:
        log.warning("%s: %d packet(s) could not be decoded; skipped", path, errors)
    return SmallFrames(np.asarray(idx, dtype=np.int64), small.frames(), errors)


def read_full_ranges(
    path: str | Path,
    info: SourceInfo,
    ranges: Sequence[tuple[int, int]],
    *,
    size: tuple[int, int] = (64, 36),
    index: VideoIndex | None = None,
) -> SmallFrames:
    """Every frame of each ``[a, b)`` in ``ranges`` at ``size``.

    For each range the decoder seeks to the keyframe to start from for ``a`` (unless it is
    already decoding before it), skips frames nothing refers to until the first packet that
    makes a frame at or after ``a`` (the frames of the range come after it in decoding
    order), then decodes everything until frame ``b - 1`` is out, so every frame returned is
    exact. Frames that do not decode are missing.
    """
    path = Path(path)
    spans = _merge_ranges(ranges, info.num_frames)
    if not spans:
        return SmallFrames(np.zeros(0, np.int64), np.zeros((0, size[1], size[0], 3), np.uint8))
    return _with_index(path, info, index, lambda idx: _read_ranges(path, idx, spans, size))


def _read_ranges(
    path: Path, index: VideoIndex, spans: list[tuple[int, int]], size: tuple[int, int]
) -> SmallFrames:
    import av

    got: list[int] = []  # frame indices in the order they were added to ``small``
    small = _Shrink(size, index.rotation)
    errors = 0
    # NONREF, not BIDIR: later frames may refer to a reference B-frame (x264's B-pyramid)
    skip_b = "DEFAULT" if index.packed or index.damaged or not index.seekable else "NONREF"
    frame_of = index.packet_frame
    container, stream = _ranges_decoder(path, index)
    try:
        cc = stream.codec_context
        packets: Iterator[tuple[int, list[Any] | None]] | None = None
        label = _Labels(index)
        fed = -1  # decode position of the last packet decoded
        for a, b in spans:
            k = index.start_key_pos(a)
            if packets is None or k > fed + 1 or label.last >= a:
                packets = _labelled(container, stream, index, k)
                label = _Labels(index)
            cc.skip_frame = skip_b
            full = skip_b == "DEFAULT"
            done = False
            for pos, decoded in packets:
                fed = pos
                if not full and 0 <= pos < len(frame_of) and frame_of[pos] >= a:
                    cc.skip_frame = "DEFAULT"
                    full = True
                if decoded is None:
                    errors += 1
                    continue
                for frame in decoded:
                    i = label(frame)
                    if i < 0:
                        continue
                    if a <= i < b and (not got or i > got[-1]):
                        got.append(i)
                        small.add(frame)
                    if i >= b - 1:
                        done = True
                if done:
                    break
            if not done:  # end of stream: nothing more to read for later spans either
                packets = None
    except av.error.FFmpegError as exc:
        raise DecodeError(path, f"cannot decode around a cut ({_reason(exc)})") from None
    finally:
        container.close()
    return SmallFrames(np.asarray(got, np.int64), small.frames(), errors)


def _ranges_decoder(path: Path, index: VideoIndex) -> tuple[Any, Any]:
    """A freshly opened file and its video stream, the decoder opened for exact ranges."""
    container = _open(path)
    try:
        stream = video_stream(container, path)
        cc = stream.codec_context
        if index.damaged:  # decoded as a full decode does (see plain_decoder)
            plain_decoder(cc)
        else:
            stream.thread_type = "AUTO"
        open_decoder(cc)  # before skip_frame turns to NONREF (see open_decoder)
    except BaseException:
        container.close()
        raise
    return container, stream


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
