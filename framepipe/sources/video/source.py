"""The video source: exact frames from video files, with PyAV or decord.

Frame ``i`` is the ``i``-th frame a full sequential decode outputs, after the container's
rotation. Opening a video builds its frame index with PyAV (:mod:`.index`): by
demuxing, with the first frames decoded to check that the container's timestamps give the
decoder's order, or, where they cannot (DivX/XviD AVI with B-frames, packed or not, H.264 in
AVI, packets without pts), by decoding the whole stream once: timestamps (the decoder's best
effort), keyframes, rotation and the real frame count. Frames are then read by one of two
backends:

- ``pyav``: the seek-and-decode reader in :mod:`framepipe.sources.video.pyav`. Exact by
  construction (each packet is labelled with its decode position and a frame is taken by the
  label it comes out with; its order is checked, and a file whose timestamps turn out wrong
  is indexed again by decoding), rotation applied, and, measured on a 10-minute
  720p H.264 file (BENCHMARKS.md), about twice as fast as decord with half its memory: it
  decodes different targets on several cores at once and skips frames nothing refers to.
  ``auto`` uses it.
- ``decord`` (``VideoReader.get_batch``), on request (``backend=decord``), or in ``auto`` when
  the PyAV reader fails to decode a file (decord then serves that file's frames, and
  ``info().backend`` says ``decord``). A decord failure while reading is a one-line
  :class:`DecodeError` naming the file. Only for files it is known to read exactly: never
  VP8/VP9/AV1, AVI with B-frames (frames out of order), files whose timestamps do not give
  the decoder's order (indexed by decoding), rotated video, files cut short or
  whose header over-reports the frame count (decord can loop forever in native code on
  those), and only after its own frame count and timestamps agree with the index. A file it
  must not read gets a one-line :class:`SourceError`, never a wrong frame.

Options (``--source-opt KEY=VALUE``): ``backend`` = ``auto`` (default), ``pyav`` or
``decord``; ``threads`` = decoders run at once (default: the CPUs, at most 4); ``skip_nonref``
= let the PyAV reader skip unreferenced frames on the way to a wanted one (default true;
never done on packed B-frames); ``background`` (``[r, g, b]`` or a colour name, default
white): what transparent pixels of a video with alpha (PNG or QuickTime Animation in MOV,
ProRes 4444, FFV1, GIF) become, as for images. VP9 alpha in WebM is not decoded (FFmpeg's
VP9 decoder reads the colour only): such a video's frames are its colour planes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import framepipe.sources.video.lowres as lowres
from framepipe.errors import ConfigError, DecodeError, SourceError, did_you_mean
from framepipe.sources.base import Source, colour_option, frame_indices, register_source
from framepipe.sources.video.convert import Convert, to_rgb, to_small_rgb
from framepipe.sources.video.decord_reader import (
    DecordReader,
    decord_available,
    decord_reason,
    decord_refusal,
)
from framepipe.sources.video.index import IndexMismatch, VideoIndex, load_index
from framepipe.sources.video.pyav import PyAVReader, Store
from framepipe.types import FrameBatch, SkipMode, SmallFrames, SourceInfo

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

BACKENDS = ("auto", "decord", "pyav")


@register_source
class VideoSource(Source):
    """A video file. ``info()`` is metadata only; ``read`` decodes just the asked frames."""

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

    def __init__(
        self,
        path: str | Path,
        *,
        backend: str = "auto",
        threads: int | None = None,
        skip_nonref: bool = True,
        background: Any = (255, 255, 255),
        **options: Any,
    ) -> None:
        super().__init__(path, **options)
        backend = str(backend).lower()
        if backend not in BACKENDS:
            raise ConfigError(
                f"backend {backend!r} is not one of {', '.join(BACKENDS)}"
                + did_you_mean([backend], BACKENDS)
            )
        if threads is not None and int(threads) < 1:
            raise ConfigError(f"threads ({threads}) must be >= 1")
        self.backend_option = backend
        self.threads = int(threads) if threads is not None else None
        self.skip_nonref = bool(skip_nonref)
        self.background = colour_option(background)
        self._index: VideoIndex | None = None
        self._info: SourceInfo | None = None
        self._backend: str | None = None
        self._decord: DecordReader | None = None
        self._decord_reason: str | None = None
        self._pyav: PyAVReader | None = None

    # -- metadata -------------------------------------------------------------------------
    @property
    def index(self) -> VideoIndex:
        """The frame index (built on first use)."""
        if self._index is None:
            self._index = load_index(self.path)
        return self._index

    @property
    def backend(self) -> str:
        """``decord`` or ``pyav``: the reader that serves full-size frames. With ``auto`` it
        is ``pyav`` until the PyAV reader fails on this file and decord (confirmed exact)
        takes over: from then on ``decord``, in ``info()`` too."""
        if self._backend is None:
            self._backend = self._choose_backend()
        return self._backend

    def info(self) -> SourceInfo:
        if self._info is None:
            idx = self.index
            backend = self.backend
            extra: dict[str, Any] = {
                "codec": idx.codec,
                "container": idx.container,
                "rotation": idx.rotation,
                "reordered": idx.reordered,
            }
            if idx.truncated:
                extra["truncated"] = True
            self._info = SourceInfo(
                id=str(self.path),
                kind="video",
                num_frames=idx.num_frames,
                width=idx.width,
                height=idx.height,
                fps=idx.fps,
                timestamps_s=tuple(float(t) for t in idx.timestamps_s),
                duration_s=idx.duration_s,
                keyframe_indices=tuple(int(i) for i in idx.key_indices),
                backend=backend,
                extra=extra,
            )
        return self._info

    def _choose_backend(self) -> str:
        if self.backend_option == "decord":
            reason = self._decord_refusal()
            if reason is not None:
                msg = f"backend=decord cannot read this file exactly: {reason}"
                raise SourceError(self.path, msg)
            return "decord"
        return "pyav"

    def _decord_refusal(self) -> str | None:
        """Why decord must not read this file, or None after it opened and agreed."""
        if self._decord is not None:
            return None
        if self._decord_reason is not None:  # refused once: never reopen it per clip
            return self._decord_reason
        if not decord_available():
            return "decord is not installed"
        reason = decord_refusal(self.index)
        if reason is not None:
            return reason
        reader = DecordReader(self.index, threads=self.threads or 0)
        try:
            reason = reader.confirm()
        except Exception as exc:  # decord raises its own DECORDError (or a RuntimeError)
            reason = f"decord cannot open it ({decord_reason(exc, 120)})"
        if reason is None:
            self._decord = reader
        else:
            reader.close()
        self._decord_reason = reason
        return reason

    def _pyav_reader(self) -> PyAVReader:
        if self._pyav is None:
            self._pyav = PyAVReader(self.index, threads=self.threads, skip_nonref=self.skip_nonref)
        return self._pyav

    # -- frames ---------------------------------------------------------------------------
    def _check(self, indices: Sequence[int]) -> list[int]:
        n = self.index.num_frames
        idx = frame_indices(indices, self.path)
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise DecodeError(self.path, f"frame(s) {bad[:5]} out of range 0..{n - 1}")
        return idx

    def read(self, indices: Sequence[int]) -> FrameBatch:
        idx = self._check(indices)
        info = self.info()
        if not idx:
            empty = np.empty((0, info.height, info.width, 3), dtype=np.uint8)
            return FrameBatch(empty, (), ())
        if self.backend == "decord":
            assert self._decord is not None
            frames = self._decord.read(idx)
            arr = np.stack([frames[i] for i in idx])
        else:
            arr = np.empty((len(idx), info.height, info.width, 3), dtype=np.uint8)
            try:
                self._read_pyav(
                    idx, _filler(arr, idx, to_rgb(self.index.rotation, self.background), self.path)
                )
            except DecodeError as exc:
                if self.backend_option != "auto" or self._decord_refusal() is not None:
                    raise
                assert self._decord is not None
                log.warning("%s; reading this file with decord instead", exc)
                frames = self._decord.read(idx)
                arr = np.stack([frames[i] for i in idx])
                self._use_decord()
        ts = self.info().timestamps_s  # info again: a read may have re-indexed the file
        assert ts is not None
        return FrameBatch(arr, tuple(idx), tuple(ts[i] for i in idx))

    def _use_decord(self) -> None:
        """decord read what the PyAV reader could not: it serves this file's frames from
        now on, and ``info()`` says so."""
        self._backend = "decord"
        if self._info is not None:
            self._info = dataclasses.replace(self._info, backend="decord")

    def _read_small(self, idx: list[int], size: tuple[int, int]) -> np.ndarray:
        """Frames scaled to ``size`` = (width, height) while converting from the decoder's
        picture (never a full-size RGB copy); the PyAV reader decodes them on several
        threads, skipping unreferenced frames that fall between the wanted ones."""
        w, h = size
        out = np.empty((len(idx), h, w, 3), dtype=np.uint8)
        self._read_pyav(
            idx,
            _filler(
                out, idx, to_small_rgb(self.index.rotation, (w, h), self.background), self.path
            ),
        )
        return out

    def _read_pyav(self, idx: list[int], store: Store) -> None:
        """The PyAV reader's read. When the decoder disagrees with an index built from the
        container's timestamps, the index is rebuilt from a full decode and the read done
        again (an error instead when the frame count changes: the indices asked for were
        counted on the old one)."""
        try:
            self._pyav_reader().read(idx, store)
        except IndexMismatch as exc:
            old = self.index
            if old.order == "decoded":
                raise
            log.warning("%s; indexing it again by decoding every frame", exc)
            new = load_index(self.path, rebuild=str(exc).split(": ", 1)[-1])
            self._close_pyav()
            self._index, self._info = new, None
            if new.num_frames != old.num_frames:
                raise DecodeError(
                    self.path,
                    f"a full decode gives {new.num_frames} frames, not the {old.num_frames} "
                    "the container's timestamps said: open it again",
                ) from None
            self._pyav_reader().read(idx, store)

    def _read_signal(
        self, start: int, end: int, size: tuple[int, int], skip: SkipMode
    ) -> SmallFrames:
        """The fast signal decoder (:func:`framepipe.sources._signal.read_signal`): PyAV at
        the tiny size, dropping the frames ``skip`` allows (B-frames by default)."""
        info = self.info()
        return lowres.read_signal(
            self.path, info, start, end, size=size, skip=skip, index=self.index
        )

    def read_signal_ranges(
        self, ranges: Sequence[tuple[int, int]], *, size: tuple[int, int] = (64, 36)
    ) -> SmallFrames:
        """Every frame of each range, decoded from the keyframe before it
        (:func:`framepipe.sources.lowres.read_full_ranges`)."""
        info = self.info()
        return lowres.read_full_ranges(self.path, info, ranges, size=size, index=self.index)

    def close(self) -> None:
        if self._decord is not None:
            self._decord.close()
        self._decord = None
        self._close_pyav()

    def _close_pyav(self) -> None:
        if self._pyav is not None:
            self._pyav.close()
        self._pyav = None


def _filler(out: np.ndarray, idx: list[int], convert: Convert, path: Path) -> Store:
    """A ``store`` that converts a frame once and writes it to every row that asked for it;
    a frame of another size than the stream's (the picture size changes mid-stream, as in
    MPEG-TS files joined end to end) is a one-line :class:`SourceError`."""
    rows: dict[int, list[int]] = {}
    for k, i in enumerate(idx):
        rows.setdefault(i, []).append(k)

    def store(i: int, frame: Any) -> None:
        img = convert(frame)
        if img.shape != out.shape[1:]:
            h, w = out.shape[1:3]
            raise SourceError(
                path,
                f"the picture size changes mid-stream: frame {i} is "
                f"{frame.width}x{frame.height}, the stream {w}x{h} (not supported)",
            )
        for k in rows[i]:
            out[k] = img

    return store
