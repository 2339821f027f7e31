"""Demuxing, and decoding with labels: which packet made each frame the decoder outputs.

Before a packet goes to the decoder its pts is replaced by the packet's decode position (its
*label*). A decoder copies the pts of the packet it is decoding to the frame it starts, so
every frame that comes out names the packet that made it, whatever the container's
timestamps say and however the decoder reorders (B-frames). That holds through DivX/XviD
"packed" B-frames too (a packet holding two pictures: the second is decoded with the next
packet and carries that packet's label) and through their not-coded placeholder packets
(N-VOPs, which make no picture of their own). A frame index built from labels, and readers
that take frames by label, therefore agree with a full sequential decode by construction.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import DecodeError

log = logging.getLogger(__name__)

MISSING = np.iinfo(np.int64).min
"""A packet timestamp the container does not give."""

_VOP_START = b"\x00\x00\x01\xb6"
_VOP_SAMPLE = 500
"""MPEG-4 Part 2 packets searched for packed pictures (an encoder setting: it shows early)."""


class IndexMismatch(DecodeError):
    """The decoder or the demuxer disagrees with the frame index (it must be rebuilt)."""


@dataclass
class Packets:
    """The video packets of a file in decode order (empty ones left out; corrupt ones kept,
    as a plain decode feeds them to the decoder)."""

    pts: np.ndarray
    """int64 container pts (``MISSING`` where absent)."""
    dts: np.ndarray
    key: np.ndarray
    size: np.ndarray
    duration: np.ndarray
    shown: np.ndarray
    """bool: not an invisible frame (VP8 alternate reference frames are never shown)."""
    discard: np.ndarray
    """bool: flagged discard (outside an MP4/MOV edit list): the decoder drops its frame."""
    max_pictures: int = 1
    """Most MPEG-4 Part 2 pictures found in one packet (2: packed B-frames)."""
    truncated: bool = False
    damage_pos: int = -1
    """Decode position of the first packet flagged corrupt or (MPEG-TS/PS) right after
    missing ones, a hole as packet loss leaves (-1: none; a corrupt last packet is a cut)."""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.size)

    @property
    def damaged(self) -> bool:
        return self.damage_pos >= 0

    def ident(self, kind: str) -> np.ndarray:
        """What the demuxer reports for each packet: ``pts`` (dts where it has none) or
        ``dts`` (pts where it has none)."""
        a, b = (self.pts, self.dts) if kind == "pts" else (self.dts, self.pts)
        return np.where(a != MISSING, a, b)


def ident_kind(container_name: str) -> str:
    """Which timestamp names a packet in this container (the one it stores; the other may
    be a demuxer's guess that changes after a seek): ``dts`` in AVI, else ``pts``."""
    return "dts" if container_name == "avi" else "pts"


def packet_ident(packet: Any, kind: str) -> int:
    """The demuxer's timestamp for ``packet`` as :meth:`Packets.ident` reads it."""
    a, b = (packet.pts, packet.dts) if kind == "pts" else (packet.dts, packet.pts)
    v = a if a is not None else b
    return int(MISSING) if v is None else int(v)


def av_reason(exc: BaseException) -> str:
    """An FFmpeg error as a short phrase."""
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())


def _vp8_shown(data: bytes) -> bool:
    """VP8 frame header: bit 4 of the first byte is ``show_frame``."""
    return len(data) == 0 or bool(data[0] & 0x10)


LOSSY = ("mpegts", "mpeg")
"""Containers sent over lossy links (broadcast, IPTV): a recording may miss packets."""


def _holes(dts: np.ndarray) -> np.ndarray:
    """Decode positions after a decode-time step over twice the usual one (packets lost)."""
    timed = np.flatnonzero(dts != MISSING)
    steps = np.diff(dts[timed])
    if np.count_nonzero(steps > 0) < 4:
        return timed[:0]
    return timed[1:][steps > 2 * np.median(steps[steps > 0])]


def demuxed(demux: Any) -> Iterator[Any]:
    """``demux``'s packets with content, to PyAV's flush (IndexError after a new stream)."""
    with contextlib.suppress(IndexError):
        yield from (packet for packet in demux if packet.size)


def demux_packets(container: Any, stream: Any, path: Path) -> Packets:
    """Read every packet of ``stream`` once (no decoding).

    Corrupt packets are kept, as a plain decode feeds them to the decoder (it makes a frame of
    what they hold): one in the middle is damage (MPEG-TS packet loss), a corrupt last packet
    a file cut short (its frame counts if it decodes, see the index's check of the end).
    """
    import av

    codec = stream.codec_context.name
    is_vp8 = codec == "vp8"
    count_vops = codec == "mpeg4"
    # compact arrays, not lists of int objects: a long file has hundreds of thousands
    pts, dts, size, dur = array("q"), array("q"), array("q"), array("q")
    key, shown, discard = array("b"), array("b"), array("b")
    max_pictures = 1
    truncated = False
    corrupt = array("q")
    notes: list[str] = []
    try:
        for packet in demuxed(container.demux(stream)):
            if packet.is_corrupt:
                corrupt.append(len(size))
            p, d = packet.pts, packet.dts
            pts.append(MISSING if p is None else int(p))
            dts.append(MISSING if d is None else int(d))
            key.append(bool(packet.is_keyframe))
            size.append(int(packet.size))
            dur.append(int(packet.duration or 0))
            shown.append(not is_vp8 or _vp8_shown(bytes(packet)))
            discard.append(bool(packet.is_discard))
            if count_vops and len(size) <= _VOP_SAMPLE:
                max_pictures = max(max_pictures, bytes(packet).count(_VOP_START))
    except av.error.FFmpegError as exc:
        truncated = True
        notes.append(f"demuxing stopped early ({av_reason(exc)})")
    if not size:
        raise DecodeError(path, "no video frames in the file")
    dts_arr = np.frombuffer(dts, dtype=np.int64).copy()
    bad = [p for p in corrupt if p < len(size) - 1]
    if len(bad) < len(corrupt):
        truncated = True
        notes.append("the last packet is corrupt (the file is cut short)")
    if bad:
        notes.append(f"{len(bad)} corrupt packet(s) in the stream")
    holes = _holes(dts_arr).tolist() if container.format.name in LOSSY else []
    if holes:
        notes.append(f"packets missing at {len(holes)} place(s)")
    return Packets(
        pts=np.frombuffer(pts, dtype=np.int64).copy(),
        dts=dts_arr,
        key=np.frombuffer(key, dtype=np.int8).astype(bool),
        size=np.frombuffer(size, dtype=np.int64).copy(),
        duration=np.frombuffer(dur, dtype=np.int64).copy(),
        shown=np.frombuffer(shown, dtype=np.int8).astype(bool),
        discard=np.frombuffer(discard, dtype=np.int8).astype(bool),
        max_pictures=max_pictures,
        truncated=truncated,
        damage_pos=min(bad + holes, default=-1),
        notes=notes,
    )


def open_decoder(cc: Any) -> None:
    """Open the decoder with ``skip_frame`` at ``DEFAULT`` (before a reader changes it per
    packet). Some decoders read ``skip_frame`` only when opened: libdav1d (AV1) opened with
    ``NONREF`` decodes reference frames only, for good, whatever is asked of it later, so
    a wanted frame that nothing refers to would never come out."""
    cc.skip_frame = "DEFAULT"
    if not cc.is_open:
        cc.open()


def may_be_transparent(fmt: Any) -> bool:
    """Whether pictures of the pixel format ``fmt`` (an ``av.VideoFormat``, None when
    unknown) may be transparent: an alpha plane, or a palette (GIF's may hold alpha)."""
    return fmt is not None and (bool(fmt.has_palette) or any(c.is_alpha for c in fmt.components))


def rotation_of(frame: Any) -> int:
    """Counter-clockwise degrees (0/90/180/270) from the frame's display matrix."""
    try:
        rot = round(float(frame.rotation) / 90.0) * 90
    except (AttributeError, TypeError, ValueError):
        return 0
    return rot % 360


@dataclass
class Decoded:
    """What a labelled decode from the first packet put out, in output order."""

    labels: list[int]
    """The decode position of the packet that made each frame (-1: the frame had no pts)."""
    keys: list[bool]
    """Whether the decoder flagged each frame as a keyframe."""
    rotation: int = 0
    bad_packets: int = 0
    damage_pos: int = -1
    """The first packet the decoder rejected or made a frame it flags corrupt of (-1: none)."""
    stopped: str | None = None
    """Why decoding stopped before the end (a demuxer error), or None."""


def decode_labels(
    container: Any,
    stream: Any,
    packets: Packets,
    path: Path,
    *,
    kind: str = "pts",
    limit: int | None = None,
    threads: bool = False,
    plain: bool = False,
    rewind: bool = True,
) -> Decoded:
    """Decode from the first packet, labelling packets by decode position.

    Stops after ``limit`` frames (then without draining the decoder), else at the end of
    the stream. ``threads`` lets the decoder use frame threads (the output and the labels
    are the same either way); ``plain`` leaves its threads as PyAV sets them (a plain
    decode's: see :func:`plain_decoder`). Packets the decoder rejects are skipped, as the
    reader does. Each packet must be the one ``packets`` holds at its position (``kind``: see
    :func:`ident_kind`), else :class:`IndexMismatch`. ``rewind=False``: ``container`` is
    freshly opened, so not seeked (a seek to 0 may land on the first keyframe, after
    packets that come before it).
    """
    import av

    ident = packets.ident(kind)
    if rewind:
        container.seek(0, stream=stream, backward=True, any_frame=False)
    cc = stream.codec_context
    if not cc.is_open:  # one thread for a few frames: less memory, no slower
        if plain:
            plain_decoder(cc)
        elif threads:
            stream.thread_type = "AUTO"
        else:
            cc.thread_count = 1
    out = Decoded([], [])

    def take(frames: list[Any]) -> None:
        for frame in frames:
            if not out.labels:
                out.rotation = rotation_of(frame)
            out.labels.append(-1 if frame.pts is None else int(frame.pts))
            out.keys.append(bool(frame.key_frame))
            if frame.is_corrupt:
                out.damage_pos = earliest(out.damage_pos, max(0, out.labels[-1]))

    pos = 0
    # closed when done: a demux dropped before its end leaks PyAV's packet and stream table
    demux = container.demux(stream)
    with_content = demuxed(demux)
    try:
        while True:
            try:
                packet = next(with_content)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                out.stopped = av_reason(exc)
                break
            if pos >= len(packets) or (
                packet_ident(packet, kind) != ident[pos] or packet.size != packets.size[pos]
            ):
                raise IndexMismatch(path, "demuxing the file twice gave different packets")
            packet.pts = pos
            pos += 1
            try:
                take(cc.decode(packet))
            except av.error.InvalidDataError as exc:
                out.bad_packets += 1
                out.damage_pos = earliest(out.damage_pos, pos - 1)
                log.debug("%s: skipping a bad packet (%s)", path, av_reason(exc))
            if limit is not None and len(out.labels) >= limit:
                return out
        take(cc.decode(None))
    except av.error.FFmpegError as exc:
        if not out.labels:
            raise DecodeError(path, f"video does not decode ({av_reason(exc)})") from None
        out.stopped = av_reason(exc)
    finally:
        demux.close()  # stopped at ``limit``
        cc.flush_buffers()
    return out


def plain_decoder(cc: Any) -> None:
    """Set the unopened decoder ``cc`` to decode as a plain ``container.decode`` does: slice
    threads, as many as PyAV's default. Where data is damaged (a corrupt packet, a missing
    reference) the decoder fills in what is lost differently with another thread setting
    (one thread, frame threads), so a damaged stream's frames are only those of a full
    decode when decoded like this, and without skipping frames (what a damaged picture is
    filled from may be a frame nothing refers to)."""
    cc.thread_type = "SLICE"
    cc.thread_count = 0


def earliest(a: int, b: int) -> int:
    """The earlier of two decode positions, -1 meaning none."""
    return b if a < 0 else min(a, b) if b >= 0 else a


def _pos(ident: np.ndarray, packet: Any) -> int:
    """Decode position of a demuxed packet by its pts (the number of packets when unknown)."""
    t = packet.pts if packet.pts is not None else packet.dts
    hit = np.flatnonzero(ident == (MISSING if t is None else int(t)))
    return int(hit[0]) if len(hit) else len(ident)


def tail_decodable(
    container: Any, stream: Any, pk: Packets, key: np.ndarray, path: Path
) -> tuple[np.ndarray, int]:
    """Which packets really decode, checking the last group of pictures of a cut file, and
    the decode position of the first there that makes a frame the decoder flags corrupt (a
    picture cut off, filled in by the decoder), -1 when none does."""
    import av

    ident = pk.ident("pts")
    keep = np.ones(len(ident), dtype=bool)
    keys = np.flatnonzero(key)
    k = int(keys[-1]) if len(keys) else 0
    tail = set(int(p) for p in ident[k:])
    seen: set[int] = set()
    corrupt: set[int] = set()

    def note(frames: list[Any]) -> None:
        for f in frames:
            if f.pts is not None:
                seen.add(int(f.pts))
                if f.is_corrupt:
                    corrupt.add(int(f.pts))

    cc = stream.codec_context
    # from the keyframe before: the last group's leading pictures (open GOP) refer to it; at
    # its decode time, the earlier of its two (MPEG-TS/PS seek by decode time)
    j = int(keys[-2]) if len(keys) > 1 else k
    start = min(int(t) for t in (pk.pts[j], pk.dts[j], ident[j]) if t != MISSING)
    container.seek(start, stream=stream, backward=True, any_frame=False)
    first = True
    demux = container.demux(stream)
    try:
        for packet in demuxed(demux):
            if first and _pos(ident, packet) > k:
                log.debug("%s: tail check landed after the last keyframe; skipped", path)
                return keep, -1
            first = False
            try:
                note(cc.decode(packet))
            except av.error.FFmpegError:
                continue
        note(cc.decode(None))
    except av.error.FFmpegError as exc:
        log.debug("%s: tail check stopped (%s)", path, av_reason(exc))
    finally:
        demux.close()  # see decode_labels
        cc.flush_buffers()
    lost = tail - seen
    if lost:
        keep &= ~np.isin(ident, np.fromiter(lost, dtype=np.int64))
        log.info("%s: %d frame(s) at the cut-off end do not decode; dropped", path, len(lost))
    bad = np.flatnonzero(np.isin(ident[k:], np.fromiter(corrupt & tail, dtype=np.int64)))
    return keep, k + int(bad[0]) if len(bad) else -1


def needs_decoding(container_name: str, codec: Any, packets: Packets) -> str | None:
    """Why the container's timestamps cannot give the decoder's output order (None: they
    can). The index is then built from a full labelled decode instead."""
    if packets.damaged:
        return "damaged stream (corrupt or missing packets): its frames are what decodes"
    if packets.max_pictures > 1:
        return "packed B-frames (two pictures in one packet, as DivX/XviD write them)"
    untimed = int(np.count_nonzero((packets.pts == MISSING) & (packets.dts == MISSING)))
    if untimed:
        return f"{untimed} packet(s) carry no timestamp at all"
    if not getattr(codec, "reorder", True):
        return None  # decode order is presentation order
    if container_name == "avi":
        return "AVI stores no presentation times and the codec may reorder frames"
    missing = int(np.count_nonzero(packets.pts == MISSING))
    if missing:
        return f"{missing} packet(s) carry no presentation time and the codec may reorder"
    return None


def best_effort_ticks(raw: np.ndarray, step: int) -> np.ndarray:
    """Presentation times of the frames in output order, strictly increasing.

    ``raw`` holds, per frame, the time of the packet that made it (``MISSING`` where there
    is none): the pts the decoder would have put on the frame. Used as they are when they
    increase; otherwise sorted (a decoder hands out its frames' times, not their order);
    gaps are filled from the neighbours and ties moved one tick apart.
    """
    n = len(raw)
    vals = raw.astype(np.int64).copy()
    have = vals != MISSING
    if not have.any():
        return np.arange(n, dtype=np.int64) * max(1, step)
    if not have.all():
        k = np.flatnonzero(have)
        lo, hi = int(k[0]), int(k[-1])
        filled = np.interp(np.arange(n), k, vals[k].astype(np.float64))
        filled[:lo] = vals[lo] - (lo - np.arange(lo)) * step
        filled[hi + 1 :] = vals[hi] + (np.arange(hi + 1, n) - hi) * step
        vals = np.round(filled).astype(np.int64)
    if np.any(np.diff(vals) <= 0):
        vals = np.sort(vals)
    ramp = np.arange(n, dtype=np.int64)
    return np.maximum.accumulate(vals - ramp) + ramp


def release_freed_memory() -> None:
    """Hand the decoder's freed picture buffers back to the system (glibc keeps them in
    this thread's heap, where the reader's threads, with heaps of their own, cannot reuse
    them: without this a read's peak memory grows by the pictures indexing decoded)."""
    trim = _MALLOC_TRIM[0]
    if trim is None:
        try:  # the running program's symbols: libc's, on Linux
            trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError, TypeError):  # not glibc
            trim = False
        _MALLOC_TRIM[0] = trim
    if trim:
        trim(0)


_MALLOC_TRIM: list[Any] = [None]
