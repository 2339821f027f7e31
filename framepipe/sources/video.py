"""The video source (first cut: PyAV only, exact by presentation timestamp).

Metadata comes from demuxing packets (no decoding): their presentation timestamps, sorted,
give the frame count, per-frame times (right for variable frame rate) and keyframes. Frame
``i`` is read by seeking to the keyframe at or before its timestamp and decoding forward
until the frame with that exact timestamp comes out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framepipe.errors import DecodeError, SourceError, UnsupportedInputError
from framepipe.sources.base import Source, register_source
from framepipe.types import FrameBatch, SourceInfo

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".m2ts",
        ".mts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".mxf",
        ".vob",
        ".gif",
    }
)


@register_source
class VideoSource(Source):
    kind: ClassVar[str] = "video"
    extensions: ClassVar[frozenset[str]] = VIDEO_EXTENSIONS

    @classmethod
    def sniff_file(cls, path: Path, head: bytes) -> bool:
        return (
            head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide")  # ISO BMFF / QuickTime
            or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska / WebM
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
            or head[:3] == b"FLV"
            or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")  # MPEG-PS
            or (len(head) > 0 and head[0] == 0x47 and path.suffix.lower() in (".ts", ""))
        )

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        self._info: SourceInfo | None = None
        self._pts: np.ndarray | None = None
        self._time_base: Fraction | None = None
        self._rotation = 0

    # -- metadata ---------------------------------------------------------------------
    def info(self) -> SourceInfo:
        if self._info is None:
            self._info = self._probe()
        return self._info

    def _open(self) -> Any:
        import av

        if not self.path.exists():
            raise SourceError(self.path, "no such file")
        if self.path.is_dir():
            raise UnsupportedInputError(self.path, "is a folder, not a video file")
        if self.path.stat().st_size == 0:
            raise UnsupportedInputError(self.path, "empty file (0 bytes)")
        try:
            return av.open(str(self.path))
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise UnsupportedInputError(
                self.path, f"not a readable video ({_av_reason(exc)})"
            ) from None

    def _probe(self) -> SourceInfo:
        import av

        container = self._open()
        try:
            if not container.streams.video:
                raise UnsupportedInputError(self.path, "no video stream (audio-only or data file)")
            stream = container.streams.video[0]
            tb = stream.time_base or Fraction(1, 90000)
            pts: list[int] = []
            key_pts: list[int] = []
            durations: list[int] = []
            try:
                for packet in container.demux(stream):
                    if packet.pts is None or packet.size == 0:
                        continue
                    pts.append(packet.pts)
                    durations.append(packet.duration or 0)
                    if packet.is_keyframe:
                        key_pts.append(packet.pts)
            except av.error.FFmpegError as exc:
                log.warning("%s: demuxing stopped early (%s)", self.path, _av_reason(exc))
            if not pts:
                raise DecodeError(self.path, "no decodable video frames")
            order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
            spts = np.asarray(pts, dtype=np.int64)[order]
            spts = np.unique(spts)
            self._pts = spts
            self._time_base = Fraction(tb)
            self._rotation = _rotation_of(stream)
            ts = (spts - spts[0]) * float(tb) + float(spts[0] * tb)
            dur = np.asarray(durations, dtype=np.int64)[order]
            last_dur = float(dur[-1] * tb) if len(dur) and dur[-1] > 0 else None
            rate = stream.average_rate or stream.guessed_rate
            fps = Fraction(rate) if rate else None
            if last_dur is None:
                last_dur = float(1 / fps) if fps else 0.0
            duration = float(ts[-1] - ts[0]) + last_dur
            if fps is None and len(ts) > 1:
                fps = Fraction(len(ts) - 1) / Fraction(float(ts[-1] - ts[0])).limit_denominator(
                    1_000_000
                )
            key_idx = np.searchsorted(spts, np.asarray(sorted(key_pts), dtype=np.int64))
            w, h = stream.codec_context.width, stream.codec_context.height
            if self._rotation in (90, 270):
                w, h = h, w
            return SourceInfo(
                id=str(self.path),
                kind="video",
                num_frames=len(spts),
                width=w,
                height=h,
                fps=fps,
                timestamps_s=tuple(float(t) for t in ts),
                duration_s=duration,
                keyframe_indices=tuple(int(i) for i in key_idx),
                backend="pyav",
                extra={
                    "codec": stream.codec_context.name,
                    "container": container.format.name,
                    "rotation": self._rotation,
                },
            )
        finally:
            container.close()

    # -- frames -------------------------------------------------------------------------
    def read(self, indices: Sequence[int]) -> FrameBatch:
        info = self.info()
        assert self._pts is not None
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < info.num_frames:
                raise DecodeError(self.path, f"frame {i} out of range 0..{info.num_frames - 1}")
        wanted = sorted(set(idx))
        frames = self._decode(wanted)
        missing = [i for i in wanted if i not in frames]
        if missing:
            raise DecodeError(self.path, f"frame(s) {missing[:5]} could not be decoded")
        arr = np.stack([frames[i] for i in idx])
        ts = tuple(info.timestamps_s[i] for i in idx) if info.timestamps_s else None
        return FrameBatch(arr, tuple(idx), ts)

    def _decode(self, wanted: list[int]) -> dict[int, np.ndarray]:
        import av

        assert self._pts is not None
        pts_to_idx = {int(self._pts[i]): i for i in wanted}
        out: dict[int, np.ndarray] = {}
        container = self._open()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            pending = list(wanted)
            while pending:
                target = int(self._pts[pending[0]])
                container.seek(target, backward=True, any_frame=False, stream=stream)
                progressed = False
                try:
                    for frame in container.decode(stream):
                        if frame.pts is None:
                            continue
                        i = pts_to_idx.get(int(frame.pts))
                        if i is not None and i not in out:
                            out[i] = self._to_rgb(frame)
                            progressed = True
                        if frame.pts >= int(self._pts[pending[-1]]):
                            break
                        # stop when the next wanted frame is far: seek is cheaper
                        nxt = [p for p in pending if p not in out]
                        if nxt and frame.pts > target and self._far(frame.pts, nxt[0]):
                            break
                except av.error.FFmpegError as exc:
                    log.warning("%s: decoding error (%s)", self.path, _av_reason(exc))
                pending = [p for p in pending if p not in out]
                if not progressed:
                    break
        finally:
            container.close()
        return out

    def _far(self, pts: int, idx: int) -> bool:
        info = self.info()
        assert info.keyframe_indices is not None and self._pts is not None
        keys = np.asarray(info.keyframe_indices)
        k = keys[keys <= idx]
        if len(k) == 0:
            return False
        return int(self._pts[int(k[-1])]) > pts

    def _to_rgb(self, frame: Any) -> np.ndarray:
        img = frame.to_ndarray(format="rgb24")
        if self._rotation:
            img = np.ascontiguousarray(np.rot90(img, k=-self._rotation // 90))
        return img


def _rotation_of(stream: Any) -> int:
    """Clockwise rotation (0, 90, 180, 270) to apply so the picture is upright."""
    rot = 0
    try:
        meta = stream.metadata.get("rotate")
        if meta is not None:
            rot = int(meta)
    except (ValueError, AttributeError):
        pass
    try:
        for sd in getattr(stream, "side_data", {}) or {}:
            if "display" in str(sd).lower():
                pass
    except Exception:  # pragma: no cover
        pass
    return rot % 360


def _av_reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(msg).split())
