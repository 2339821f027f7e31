"""The frame index of a video file, built by demuxing (no full decode).

Every packet of the video stream is read once: its presentation timestamp (pts), decode
position and keyframe flag. Sorting the timestamps gives the frames in presentation order
(frame ``i`` is the frame with the ``i``-th smallest pts), their times in seconds (right for
variable frame rate), and which of them are keyframes. Two cheap decodes check the ends: the
first frame (its rotation, and that the start really decodes) and, only when the file looks
cut short, the last group of pictures, so that ``num_frames`` counts frames that decode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import DecodeError, SourceError, UnsupportedInputError

log = logging.getLogger(__name__)


@dataclass
class VideoIndex:
    """Where every frame of a video stream is, in presentation and decode order."""

    path: Path
    container: str
    """Demuxer name (``mov,mp4,m4a,3gp,3g2,mj2``, ``avi``, ``matroska,webm`` ...)."""
    codec: str
    time_base: Fraction
    stream_index: int
    pts: np.ndarray
    """int64 pts of frame ``i`` (presentation order, strictly increasing)."""
    decode_pts: np.ndarray
    """int64 pts of every kept packet in decode (file) order."""
    decode_key: np.ndarray
    """bool: whether the packet at each decode position is a keyframe."""
    frame_decode_pos: np.ndarray
    """int64: decode position of frame ``i``."""
    key_indices: np.ndarray
    """Presentation indices of the keyframes."""
    duration_s: float
    fps: Fraction | None
    coded_width: int
    coded_height: int
    rotation: int = 0
    """Counter-clockwise degrees (0, 90, 180, 270) that turn the stored picture upright."""
    header_frames: int = 0
    """The frame count the container header claims (0 when it does not say)."""
    reordered: bool = False
    """Whether decode order differs from presentation order (B-frames)."""
    truncated: bool = False
    """Whether the file looked cut short (corrupt or missing packets at the end)."""
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def width(self) -> int:
        return self.coded_height if self.rotation in (90, 270) else self.coded_width

    @property
    def height(self) -> int:
        return self.coded_width if self.rotation in (90, 270) else self.coded_height

    @property
    def timestamps_s(self) -> np.ndarray:
        return self.pts.astype(np.float64) * float(self.time_base)

    def start_key_pos(self, index: int) -> int:
        """Decode position of the keyframe to start decoding from to reach frame ``index``.

        The last keyframe at or before the frame in decode order whose own pts is not after
        the frame's (so open-GOP leading pictures start one group earlier).
        """
        d = int(self.frame_decode_pos[index])
        p = int(self.pts[index])
        keys = self._key_pos
        k = int(np.searchsorted(keys, d, side="right")) - 1
        while k > 0 and int(self.decode_pts[keys[k]]) > p:
            k -= 1
        return int(keys[k]) if k >= 0 else 0

    @property
    def _key_pos(self) -> np.ndarray:
        cached = getattr(self, "_key_pos_cache", None)
        if cached is None:
            cached = np.flatnonzero(self.decode_key)
            if len(cached) == 0 or cached[0] != 0:
                cached = np.concatenate([[0], cached]).astype(np.int64)
            self._key_pos_cache = cached
        return cached


def av_reason(exc: BaseException) -> str:
    """An FFmpeg error as a short phrase."""
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())


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
    for s in container.streams.video:
        if s.disposition & 1024:  # AV_DISPOSITION_ATTACHED_PIC: cover art, not video
            continue
        if s.codec_context is None:
            raise UnsupportedInputError(path, f"no decoder for video codec {s.codec.name!r}")
        return s
    raise UnsupportedInputError(path, "no video stream (audio-only or data file)")


def _vp8_shown(data: bytes) -> bool:
    """VP8 frame header: bit 4 of the first byte is ``show_frame``."""
    return len(data) == 0 or bool(data[0] & 0x10)


def build_index(path: Path) -> VideoIndex:
    """Demux ``path`` once and check its ends; raises SourceError subclasses on bad input."""
    import av

    container = open_container(path)
    try:
        stream = video_stream(container, path)
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        codec = stream.codec_context.name
        is_vp8 = codec == "vp8"
        pts_list: list[int] = []
        key_list: list[bool] = []
        dur_list: list[int] = []
        truncated = False
        notes: list[str] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.is_corrupt:
                    truncated = True
                    notes.append("dropped a corrupt (cut short) packet")
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    raise DecodeError(path, "video packets carry no timestamps")
                if is_vp8 and not _vp8_shown(bytes(packet)):
                    continue  # an invisible (alternate reference) frame: never shown
                pts_list.append(int(pts))
                key_list.append(bool(packet.is_keyframe))
                dur_list.append(int(packet.duration or 0))
        except av.error.FFmpegError as exc:
            truncated = True
            notes.append(f"demuxing stopped early ({av_reason(exc)})")
        if not pts_list:
            raise DecodeError(path, "no video frames in the file")
        header_frames = int(stream.frames or 0)
        if header_frames > len(pts_list):
            truncated = True
            notes.append(f"header claims {header_frames} frames, {len(pts_list)} present")
        decode_pts = np.asarray(pts_list, dtype=np.int64)
        decode_key = np.asarray(key_list, dtype=bool)
        if not decode_key.any():
            decode_key[0] = True
            notes.append("no packet flagged as keyframe; decoding from the start")
        first, rotation = _first_frame(container, stream, path)
        # Frames before the first one that decodes (leading pictures of a cut stream) are
        # not frames a reader can return.
        keep = decode_pts >= first
        if truncated:
            keep &= _tail_decodable(container, stream, decode_pts, decode_key, path)
        pts = np.unique(decode_pts[keep])
        if len(pts) == 0:
            raise DecodeError(path, "no decodable video frames")
        # decode position of each presentation-order frame (first packet with that pts)
        order = np.argsort(decode_pts, kind="stable")
        sorted_pts = decode_pts[order]
        frame_decode_pos = order[np.searchsorted(sorted_pts, pts, side="left")]
        key_pts = np.unique(decode_pts[decode_key])
        key_indices = np.flatnonzero(np.isin(pts, key_pts))
        reordered = bool(np.any(np.diff(decode_pts) < 0))
        rate = stream.average_rate or stream.guessed_rate
        fps = Fraction(rate) if rate else None
        ts = pts.astype(np.float64) * float(tb)
        last_pos = int(frame_decode_pos[-1])
        last_dur = dur_list[last_pos] * float(tb) if dur_list[last_pos] > 0 else None
        if fps is None and len(ts) > 1 and ts[-1] > ts[0]:
            fps = Fraction((len(ts) - 1) / (ts[-1] - ts[0])).limit_denominator(1001)
        if last_dur is None and len(ts) > 1:
            last_dur = float(ts[-1] - ts[-2])
        elif last_dur is None:
            last_dur = float(1 / fps) if fps else 0.0
        cc = stream.codec_context
        return VideoIndex(
            path=path,
            container=container.format.name,
            codec=codec,
            time_base=tb,
            stream_index=stream.index,
            pts=pts,
            decode_pts=decode_pts,
            decode_key=decode_key,
            frame_decode_pos=frame_decode_pos.astype(np.int64),
            key_indices=key_indices.astype(np.int64),
            duration_s=float(ts[-1] - ts[0]) + last_dur,
            fps=fps,
            coded_width=int(cc.width),
            coded_height=int(cc.height),
            rotation=rotation,
            header_frames=header_frames,
            reordered=reordered,
            truncated=truncated,
            notes=notes,
        )
    finally:
        container.close()


def rotation_of(frame: Any) -> int:
    """Counter-clockwise degrees (0/90/180/270) from the frame's display matrix."""
    try:
        rot = round(float(frame.rotation) / 90.0) * 90
    except (AttributeError, TypeError, ValueError):
        return 0
    return rot % 360


def _first_frame(container: Any, stream: Any, path: Path) -> tuple[int, int]:
    """Decode the first frame: its pts and the rotation to apply. Raises when none decodes."""
    import av

    container.seek(0, stream=stream, backward=True, any_frame=False)
    cc = stream.codec_context
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_corrupt:
                continue
            try:
                frames = cc.decode(packet)
            except av.error.FFmpegError:
                continue
            for frame in frames:
                if frame.pts is not None:
                    return int(frame.pts), rotation_of(frame)
        for frame in cc.decode(None):
            if frame.pts is not None:
                return int(frame.pts), rotation_of(frame)
    except av.error.FFmpegError as exc:
        raise DecodeError(path, f"video does not decode ({av_reason(exc)})") from None
    finally:
        cc.flush_buffers()
    raise DecodeError(path, "no decodable video frames")


def _tail_decodable(
    container: Any, stream: Any, decode_pts: np.ndarray, decode_key: np.ndarray, path: Path
) -> np.ndarray:
    """Which packets really decode, checking the last group of pictures of a cut file."""
    import av

    keep = np.ones(len(decode_pts), dtype=bool)
    keys = np.flatnonzero(decode_key)
    k = int(keys[-1]) if len(keys) else 0
    tail = set(int(p) for p in decode_pts[k:])
    seen: set[int] = set()
    cc = stream.codec_context
    container.seek(int(decode_pts[k]), stream=stream, backward=True, any_frame=False)
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_corrupt:
                continue
            try:
                seen.update(int(f.pts) for f in cc.decode(packet) if f.pts is not None)
            except av.error.FFmpegError:
                continue
        seen.update(int(f.pts) for f in cc.decode(None) if f.pts is not None)
    except av.error.FFmpegError as exc:
        log.debug("%s: tail check stopped (%s)", path, av_reason(exc))
    finally:
        cc.flush_buffers()
    lost = tail - seen
    if lost:
        keep &= ~np.isin(decode_pts, np.fromiter(lost, dtype=np.int64))
        log.info("%s: %d frame(s) at the cut-off end do not decode; dropped", path, len(lost))
    return keep
