"""The frame index of a video file: frame ``i`` is the ``i``-th frame a full decode outputs.

Every packet of the video stream is read once (no decoding): its timestamps, size and
keyframe flag. Then one of two ways gives the decoder's output order:

- **From the container's timestamps** (MP4, MKV, WebM, ... the usual case, cheap): sorting
  the presentation timestamps (pts) gives the frames in presentation order, their times in
  seconds (right for variable frame rate) and which are keyframes. The first frames are
  decoded with labels (see :mod:`framepipe.sources.video.decode`) and must come out of the
  decoder in exactly that order, else the second way is taken. Only when the file looks cut
  short is the last group of pictures decoded too, so that ``num_frames`` counts frames that
  decode.
- **From a full decode**, where the container's timestamps are not presentation times: AVI
  with a codec that reorders (DivX/XviD B-frames, "packed" or not, whose timestamps are only
  guesses), MPEG-4 Part 2 with packed B-frames in any container, packets with no pts, MP4/MOV
  edit lists of several edits, and damaged streams (corrupt packets, kept as a plain decode
  feeds them; MPEG-TS holes). The
  whole stream is decoded once with labels: each output frame names its packet, so the count,
  the order and the keyframes are the decoder's own; the times are the decoder's best-effort
  presentation times (:func:`framepipe.sources.video.decode.best_effort_ticks`).

Readers take frames by label, check that they come out in index order, and raise
:class:`IndexMismatch` when they do not (the source then rebuilds the index by decoding).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import DecodeError, SourceError, UnsupportedInputError
from framepipe.sources.video.decode import (
    LOSSY,
    MISSING,
    Decoded,
    IndexMismatch,
    Packets,
    av_reason,
    best_effort_ticks,
    decode_labels,
    demux_packets,
    earliest,
    ident_kind,
    may_be_transparent,
    needs_decoding,
    release_freed_memory,
    rotation_of,
    tail_decodable,
)
from framepipe.sources.video.index_cache import IndexCache

__all__ = ["IndexMismatch", "VideoIndex", "av_reason", "build_index", "load_index", "rotation_of"]

log = logging.getLogger(__name__)

CHECK_FRAMES = 8
"""Frames decoded at open to check the container's order against the decoder's."""


@dataclass
class VideoIndex:
    """Where every frame of a video stream comes from, in the decoder's output order."""

    path: Path
    container: str
    """Demuxer name (``mov,mp4,m4a,3gp,3g2,mj2``, ``avi``, ``matroska,webm`` ...)."""
    codec: str
    time_base: Fraction
    pts: np.ndarray
    """int64 presentation time (stream ticks) of frame ``i``, strictly increasing."""
    packet_ts: np.ndarray
    """int64, per packet in decode order: the timestamp the demuxer reports for it (how a
    reader recognises it after a seek, and the time to seek to)."""
    packet_key: np.ndarray
    """bool, per packet: a keyframe a reader may start decoding from."""
    packet_size: np.ndarray
    frame_decode_pos: np.ndarray
    """int64: the decode position of the packet whose decoding makes frame ``i``."""
    key_indices: np.ndarray
    """Output indices of the keyframes."""
    duration_s: float
    fps: Fraction | None
    coded_width: int
    coded_height: int
    packet_ts_kind: str = "pts"
    """``pts`` or ``dts``: which of the demuxer's timestamps ``packet_ts`` holds."""
    order: str = "timestamps"
    """``timestamps`` (the container's, checked on the first frames) or ``decoded``."""
    seekable: bool = True
    """False when packets or frames cannot be told apart: every read decodes from the start
    and counts the frames."""
    leading_dropped: bool = False
    """Whether frames at the start of the stream do not decode (a stream cut before them)."""
    packed: bool = False
    """DivX/XviD packed B-frames: a decoder told to skip frames then decodes others in their
    place (a placeholder packet as a copy of the last picture), so readers never skip."""
    rotation: int = 0
    """Counter-clockwise degrees (0, 90, 180, 270) that turn the stored picture upright."""
    header_frames: int = 0
    """The frame count the container header claims (0 when it does not say)."""
    alpha: bool = False
    """Whether the stream's pictures may be transparent (an alpha plane or a palette)."""
    reordered: bool = False
    """Whether decode order differs from output order (B-frames)."""
    truncated: bool = False
    """Whether the file looked cut short (corrupt or missing packets at the end)."""
    damage_pos: int = -1
    """Decode position of the first damaged packet (corrupt, after missing ones as MPEG-TS
    packet loss leaves, or making a frame the decoder flags corrupt); -1: none. What decodes
    after it depends on how the decoder fills in what is lost, so it is read as a plain decode
    reads it: from the start, nothing skipped, on a plain decode's threads (see
    :func:`framepipe.sources.video.decode.plain_decoder`)."""
    notes: list[str] = field(default_factory=list)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def damaged(self) -> bool:
        return self.damage_pos >= 0

    @property
    def num_packets(self) -> int:
        return len(self.packet_ts)

    @property
    def width(self) -> int:
        return self.coded_height if self.rotation in (90, 270) else self.coded_width

    @property
    def height(self) -> int:
        return self.coded_width if self.rotation in (90, 270) else self.coded_height

    @property
    def timestamps_s(self) -> np.ndarray:
        return self.pts.astype(np.float64) * float(self.time_base)

    @property
    def packet_frame(self) -> np.ndarray:
        """int64, per packet: the index of the frame its decoding makes (-1: none)."""
        pf = self._cache.get("packet_frame")
        if pf is None:
            pf = np.full(self.num_packets, -1, dtype=np.int64)
            ok = (self.frame_decode_pos >= 0) & (self.frame_decode_pos < self.num_packets)
            pf[self.frame_decode_pos[ok][::-1]] = np.flatnonzero(ok)[::-1]
            self._cache["packet_frame"] = pf
        return pf

    @property
    def pos_of(self) -> dict[int, int]:
        """Demuxer timestamp (``packet_ts``) -> decode position."""
        d = self._cache.get("pos_of")
        if d is None:
            d = {int(t): k for k, t in enumerate(self.packet_ts)}
            self._cache["pos_of"] = d
        return d

    def start_key_pos(self, index: int) -> int:
        """Decode position of the keyframe to start decoding from to reach frame ``index``.

        The last keyframe at or before the frame's packet in decode order whose own frame is
        not after it in output order (so open-GOP leading pictures start one group earlier).
        """
        d = int(self.frame_decode_pos[index])
        if not self.seekable or 0 <= self.damage_pos <= d:
            return 0
        keys = self._key_pos
        pf = self.packet_frame
        k = int(np.searchsorted(keys, d, side="right")) - 1
        while k > 0 and not 0 <= int(pf[keys[k]]) <= index:
            k -= 1
        return int(keys[k]) if k >= 0 else 0

    @property
    def _key_pos(self) -> np.ndarray:
        cached = self._cache.get("key_pos")
        if cached is None:
            cached = np.flatnonzero(self.packet_key)
            if len(cached) == 0 or cached[0] != 0:
                cached = np.concatenate([[0], cached]).astype(np.int64)
            self._cache["key_pos"] = cached
        return cached


def open_container(path: Path) -> Any:
    """``av.open`` with the checks and one-line errors every reader wants."""
    import av

    if not path.exists():
        raise SourceError(path, "no such file")
    if path.is_dir():
        raise UnsupportedInputError(path, "is a folder, not a video file")
    if path.stat().st_size == 0:
        raise UnsupportedInputError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise UnsupportedInputError(path, f"not a readable video ({av_reason(exc)})") from None


def video_stream(container: Any, path: Path) -> Any:
    """The first real video stream (not a cover picture), or UnsupportedInputError."""
    covers = 0
    for s in container.streams.video:
        if s.disposition & 1024:  # AV_DISPOSITION_ATTACHED_PIC: cover art, not video
            covers += 1
            continue
        if s.codec_context is None:
            raise UnsupportedInputError(path, f"no decoder for video codec {s.codec.name!r}")
        return s
    if covers:
        raise UnsupportedInputError(path, "no video stream, only a cover picture (audio file)")
    raise UnsupportedInputError(path, "no video stream (audio-only or data file)")


INDEX_CACHE = IndexCache(kept=16, max_bytes=128 << 20)
"""The indexes this process keeps (by file version), bounded by count and estimated bytes."""


def load_index(path: Path, *, rebuild: str | None = None) -> VideoIndex:
    """The index of ``path``, built once per file version and shared by its readers (the
    frame reader and the shot-signal reader must agree on every index). ``rebuild`` (a
    reason) builds it again from a full decode."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        return build_index(path)
    idx = INDEX_CACHE.get(key)
    if idx is None or rebuild is not None:
        idx = build_index(path, decode_reason=rebuild)
        release_freed_memory()  # the decoder is gone now
        INDEX_CACHE.put(key, idx)
    return idx


def build_index(path: Path, *, decode_reason: str | None = None) -> VideoIndex:
    """Index ``path``; raises SourceError subclasses on bad input. ``decode_reason`` forces
    the index from a full decode."""
    container = open_container(path)
    try:
        stream = video_stream(container, path)
        packets = demux_packets(container, stream, path)
        if _still_image(container.format.name, packets):  # a .jpg named with --kind video
            raise UnsupportedInputError(path, "an image, not a video")
        reason = decode_reason or needs_decoding(
            container.format.name, stream.codec_context.codec, packets
        )
        reason = reason or _edited(packets)
        if reason is None:
            idx = _from_timestamps(container, stream, packets, path)
            if idx is not None:
                return idx
            reason = "the decoder's first frames do not follow the container's timestamps"
        log.info("%s: indexing by decoding every frame: %s", path, reason)
        return _from_decoding(container, stream, packets, path, reason)
    finally:
        container.close()


def _still_image(container_name: str, pk: Packets) -> bool:
    """One picture in an image demuxer (``image2`` for a ``.jpg``, ``png_pipe`` ...)."""
    image = container_name.startswith("image2") or container_name.endswith("_pipe")
    return image and int(np.count_nonzero(pk.shown)) == 1


def _edited(pk: Packets) -> str | None:
    """Why an edit list keeps the container's timestamps from giving the frames (None: it
    does not). One that only drops the first frames (a stream-copy cut) is fine: those are
    before the first frame that decodes. One with several edits plays parts of the stream
    and drops others in between (or repeats them): its dropped packets come after kept
    ones, and the demuxer may hand out one timestamp twice."""
    times = pk.ident("pts")
    dropped, kept = times[pk.discard], times[~pk.discard]
    if len(dropped) and len(kept) and dropped.max() > kept.min():
        return "an edit list that skips or repeats parts of the stream"
    return None


def _common(container: Any, stream: Any, path: Path) -> dict[str, Any]:
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    return {
        "path": path,
        "container": container.format.name,
        "codec": cc.name,
        "time_base": Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000),
        "fps": Fraction(rate) if rate else None,
        "coded_width": int(cc.width),
        "coded_height": int(cc.height),
        "header_frames": int(stream.frames or 0),
        "alpha": may_be_transparent(cc.format),
    }


def _timing(pts: np.ndarray, tb: Fraction, fps: Fraction | None, last_ticks: int) -> Any:
    """(fps, duration_s): fps estimated from the times when the stream does not say;
    ``last_ticks`` is the last frame's own duration (0: unknown)."""
    ts = pts.astype(np.float64) * float(tb)
    if fps is None and len(ts) > 1 and ts[-1] > ts[0]:
        fps = Fraction((len(ts) - 1) / (ts[-1] - ts[0])).limit_denominator(1001)
    # in ticks, exactly (4 s of 30 fps is 4.0, not a sum of rounded frame times)
    if last_ticks <= 0 and len(pts) > 1:
        last_ticks = int(pts[-1]) - int(pts[-2])
    last = last_ticks * tb if last_ticks > 0 else (1 / fps if fps else Fraction(0))
    return fps, float((int(pts[-1]) - int(pts[0])) * tb + last)


def _decode(container: Any, stream: Any, pk: Packets, path: Path, **kw: Any) -> Decoded:
    """:func:`decode_labels`, in a freshly opened file when the seek back to the start did
    not land on the first packet (or to decode on threads once the decoder is open)."""
    kind = ident_kind(container.format.name)
    if not ((kw.get("threads") or kw.get("plain")) and stream.codec_context.is_open):
        try:
            return decode_labels(container, stream, pk, path, kind=kind, **kw)
        except IndexMismatch:
            pass
    fresh = open_container(path)
    try:
        stream = video_stream(fresh, path)
        return decode_labels(fresh, stream, pk, path, kind=kind, rewind=False, **kw)
    finally:
        fresh.close()


def _from_timestamps(container: Any, stream: Any, pk: Packets, path: Path) -> VideoIndex | None:
    """The index from sorted container pts, or None when the decoder's first frames say
    otherwise."""
    base = _common(container, stream, path)
    times = pk.ident("pts")
    kind = ident_kind(container.format.name)
    key = pk.key.copy()
    notes = list(pk.notes)
    truncated = pk.truncated
    shown = int(np.count_nonzero(pk.shown))
    if base["header_frames"] > shown:
        truncated = True
        notes.append(f"header claims {base['header_frames']} frames, {shown} present")
    if not key.any():
        key[0] = True
        notes.append("no packet flagged as keyframe; decoding from the start")
    dec = _decode(container, stream, pk, path, limit=CHECK_FRAMES)
    if not dec.labels:
        raise DecodeError(path, "no decodable video frames")
    if not 0 <= dec.labels[0] < len(pk):
        return None
    # Frames before the first one that decodes (leading pictures of a cut stream) are not
    # frames a reader can return.
    keep = pk.shown & (times >= times[dec.labels[0]])
    damage_pos = -1
    if truncated or container.format.name in LOSSY:  # a recording may stop mid-picture
        tail_ok, damage_pos = tail_decodable(container, stream, pk, key, path)
        keep &= tail_ok
    if damage_pos >= 0:
        notes.append("the last picture is cut off (the decoder fills in the rest)")
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        raise DecodeError(path, "no decodable video frames")
    pts, first = np.unique(times[kept], return_index=True)
    frame_decode_pos = kept[first].astype(np.int64)  # the first packet with each pts
    m = min(len(dec.labels), len(pts))
    if dec.labels[:m] != frame_decode_pos[:m].tolist():
        log.debug("%s: decoder order %s, timestamps say %s", path, dec.labels[:m], pts[:m])
        return None
    tb = base["time_base"]
    last = int(pk.duration[frame_decode_pos[-1]])
    fps, duration_s = _timing(pts, tb, base.pop("fps"), last)
    shown_times = times[pk.shown]
    return VideoIndex(
        **base,
        pts=pts,
        packet_ts=pk.ident(kind),
        packet_key=key,
        packet_size=pk.size,
        frame_decode_pos=frame_decode_pos,
        key_indices=np.flatnonzero(np.isin(pts, times[key])).astype(np.int64),
        duration_s=duration_s,
        fps=fps,
        packet_ts_kind=kind,
        leading_dropped=bool(pts[0] != shown_times.min()),
        rotation=dec.rotation,
        reordered=bool(np.any(np.diff(shown_times) < 0)),
        truncated=truncated,
        damage_pos=damage_pos,
        notes=notes,
    )


def _from_decoding(container: Any, stream: Any, pk: Packets, path: Path, reason: str) -> VideoIndex:
    """The index from one full labelled decode: the decoder's frames, order and keyframes."""
    dec = _decode(container, stream, pk, path, threads=not pk.damaged, plain=pk.damaged)
    labels = np.asarray(dec.labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        raise DecodeError(path, "no decodable video frames")
    base = _common(container, stream, path)
    tb = base["time_base"]
    notes = [*pk.notes, f"frame order from a full decode ({reason})"]
    valid = (labels >= 0) & (labels < len(pk))
    seekable = bool(valid.all()) and len(np.unique(labels)) == n
    kind = ident_kind(container.format.name)
    ident = pk.ident(kind)
    if len(np.unique(ident)) != len(pk):
        seekable = False
    if not seekable:
        notes.append("packets or frames cannot be told apart: reads decode from the start")
    safe = np.where(valid, labels, 0)
    raw = np.where(valid, pk.ident("pts")[safe], MISSING)
    fps = base.pop("fps")
    step = max(1, round(1 / (fps * tb))) if fps else 1
    pts = best_effort_ticks(raw, step)
    made_key = valid & pk.key[safe] & np.asarray(dec.keys, dtype=bool)
    packet_key = np.zeros(len(pk), dtype=bool)
    packet_key[labels[made_key]] = True
    if dec.bad_packets:
        notes.append(f"{dec.bad_packets} packet(s) did not decode")
    if dec.stopped:
        notes.append(f"decoding stopped early ({dec.stopped})")
    last = int(pk.duration[labels[-1]]) if valid[-1] else 0
    fps, duration_s = _timing(pts, tb, fps, last or step)
    return VideoIndex(
        **base,
        pts=pts,
        packet_ts=ident,
        packet_key=packet_key,
        packet_size=pk.size,
        frame_decode_pos=labels,
        key_indices=np.flatnonzero(made_key).astype(np.int64),
        duration_s=duration_s,
        fps=fps,
        packet_ts_kind=kind,
        order="decoded",
        seekable=seekable,
        packed=pk.max_pictures > 1,
        leading_dropped=bool(labels[0] != 0),
        rotation=dec.rotation,
        reordered=bool(np.any(np.diff(labels) <= 0)),
        truncated=pk.truncated or dec.stopped is not None,
        damage_pos=earliest(pk.damage_pos, dec.damage_pos),
        notes=notes,
    )
