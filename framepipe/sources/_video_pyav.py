"""Exact frame reads with PyAV: seek to a keyframe, decode forward, match by timestamp.

The wanted frames are grouped by the keyframe each must be decoded from. Groups are shared
out, in order, among up to ``threads`` workers, each with its own demuxer and single-threaded
decoder (PyAV releases the GIL while decoding, so the workers run at once). A worker seeks
only when its next group starts past where it is; on the way to a wanted frame, it tells the
decoder to skip frames nothing refers to (``skip_frame = NONREF``), which never changes the
frames that are decoded. A frame is taken when its pts is a wanted frame's pts, so index
``i`` is the ``i``-th frame in presentation order whatever order the decoder works in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framepipe.errors import DecodeError
from framepipe.sources._video_index import VideoIndex, av_reason, open_container, video_stream

log = logging.getLogger(__name__)

Convert = Callable[[Any], np.ndarray]
Store = Callable[[int, Any], None]
"""``store(index, frame)``: convert a decoded frame and put it where it belongs."""


@dataclass
class _Group:
    """Frames decoded from one keyframe: decode positions ``key_pos .. end_pos``."""

    key_pos: int
    end_pos: int
    targets: dict[int, int] = field(default_factory=dict)
    """pts -> frame index."""

    @property
    def cost(self) -> int:
        return self.end_pos - self.key_pos + 1


def default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def plan_groups(index: VideoIndex, wanted: Sequence[int]) -> list[_Group]:
    """One group per starting keyframe, in decode order."""
    groups: dict[int, _Group] = {}
    for i in wanted:
        k = index.start_key_pos(i)
        d = int(index.frame_decode_pos[i])
        g = groups.get(k)
        if g is None:
            g = groups[k] = _Group(k, d)
        g.end_pos = max(g.end_pos, d)
        g.targets[int(index.pts[i])] = i
    return [groups[k] for k in sorted(groups)]


def split_work(groups: list[_Group], workers: int) -> list[list[_Group]]:
    """Cut the ordered groups into at most ``workers`` contiguous shares of similar cost."""
    workers = max(1, min(workers, len(groups)))
    if workers == 1:
        return [groups]
    total = sum(g.cost for g in groups)
    shares: list[list[_Group]] = [[]]
    acc = 0
    for g in groups:
        due = total * len(shares) / workers
        if shares[-1] and len(shares) < workers and acc + g.cost / 2 > due:
            shares.append([])
        shares[-1].append(g)
        acc += g.cost
    return [s for s in shares if s]


class PyAVReader:
    """Reads frames of one indexed video with PyAV."""

    def __init__(self, index: VideoIndex, *, threads: int | None = None, skip_nonref: bool = True):
        self.index = index
        self.threads = threads or default_threads()
        self.skip_nonref = skip_nonref
        # pts -> decode position, shared read-only by the workers
        self._pos_of = {int(p): k for k, p in enumerate(index.decode_pts)}

    def read(self, wanted: Sequence[int], store: Store) -> None:
        """Decode the frames ``wanted``, handing each to ``store(index, frame)`` once.

        ``store`` is called from the worker threads, each index from one thread only.
        """
        groups = plan_groups(self.index, sorted(set(wanted)))
        shares = split_work(groups, self.threads)
        done: set[int] = set()
        if len(shares) == 1:
            done |= self._work(shares[0], store)
        else:
            with ThreadPoolExecutor(len(shares), thread_name_prefix="framepipe-decode") as ex:
                for part in ex.map(lambda s: self._work(s, store), shares):
                    done |= part
        missing = [i for i in wanted if i not in done]
        if missing:
            raise DecodeError(self.index.path, f"frame(s) {missing[:5]} did not decode")

    # -- one worker -------------------------------------------------------------------------
    def _work(self, groups: list[_Group], store: Store) -> set[int]:
        import av

        idx = self.index
        container = open_container(idx.path)
        out: set[int] = set()
        try:
            stream = video_stream(container, idx.path)
            cc = stream.codec_context
            cc.thread_count = 1
            pos_of = self._pos_of
            k = 0
            while k < len(groups):
                # a run: groups that follow on from each other without a seek
                run = [groups[k]]
                while k + 1 < len(groups) and groups[k + 1].key_pos <= run[-1].end_pos + 1:
                    k += 1
                    run.append(groups[k])
                k += 1
                targets = {p: i for g in run for p, i in g.targets.items()}
                end_pos = max(g.end_pos for g in run)
                start = run[0].key_pos
                got = self._run(container, stream, start, end_pos, targets, pos_of, store)
                if len(got) < len(targets) and self.skip_nonref:
                    log.debug("%s: retrying a run without frame skipping", idx.path)
                    rest = {p: i for p, i in targets.items() if i not in got}
                    got |= self._run(container, stream, start, end_pos, rest, pos_of, store, False)
                out |= got
        except av.error.FFmpegError as exc:
            raise DecodeError(idx.path, f"decoding failed ({av_reason(exc)})") from None
        finally:
            container.close()
        return out

    def _run(
        self,
        container: Any,
        stream: Any,
        key_pos: int,
        end_pos: int,
        targets: dict[int, int],
        pos_of: dict[int, int],
        store: Store,
        skip: bool | None = None,
    ) -> set[int]:
        import av

        idx = self.index
        skip = self.skip_nonref if skip is None else skip
        cc = stream.codec_context
        target_pos = {pos_of[p] for p in targets if p in pos_of}
        out: set[int] = set()
        seek_pts = int(idx.decode_pts[key_pos])
        for attempt in range(3):
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            demux = container.demux(stream)
            first = _next_packet(demux)
            if first is None:
                return out
            fpos = pos_of.get(_pts(first), -1)
            if 0 <= fpos <= key_pos or attempt == 2:
                break
            # landed after the keyframe we need (or somewhere unknown): aim earlier
            seek_pts = (
                int(idx.decode_pts[0])
                if attempt
                else seek_pts - (int(idx.pts[-1] - idx.pts[0]) // max(1, idx.num_frames) * 8 + 1)
            )
        mode = "DEFAULT"
        cc.skip_frame = mode
        packet: Any = first
        try:
            while packet is not None:
                pos = pos_of.get(_pts(packet), -1)
                want = "NONREF" if skip and pos not in target_pos else "DEFAULT"
                if want != mode:
                    cc.skip_frame = mode = want
                try:
                    frames = cc.decode(packet)
                except av.error.InvalidDataError as exc:
                    log.debug("%s: skipping a bad packet (%s)", idx.path, av_reason(exc))
                    frames = []
                for frame in frames:
                    i = targets.get(frame.pts) if frame.pts is not None else None
                    if i is not None and i not in out:
                        store(i, frame)
                        out.add(i)
                if pos >= end_pos or len(out) == len(targets):
                    break
                packet = _next_packet(demux)
            cc.skip_frame = "DEFAULT"
            for frame in cc.decode(None):
                i = targets.get(frame.pts) if frame.pts is not None else None
                if i is not None and i not in out:
                    store(i, frame)
                    out.add(i)
        finally:
            cc.skip_frame = "DEFAULT"
            cc.flush_buffers()
        return out


def _pts(packet: Any) -> int:
    p = packet.pts if packet.pts is not None else packet.dts
    return -1 if p is None else int(p)


def _next_packet(demux: Any) -> Any:
    for packet in demux:
        if packet.size and not packet.is_corrupt:
            return packet
    return None


def to_rgb(rotation: int) -> Convert:
    """Frame -> upright RGB array."""
    k = rotation // 90

    def convert(frame: Any) -> np.ndarray:
        img = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(np.rot90(img, k=k)) if k else img

    return convert


def to_small_rgb(rotation: int, size: tuple[int, int]) -> Convert:
    """Frame -> upright RGB array of ``size`` = (width, height), scaled by swscale."""
    w, h = size
    k = rotation // 90
    sw, sh = (h, w) if k % 2 else (w, h)

    def convert(frame: Any) -> np.ndarray:
        img = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA")
        arr = img.to_ndarray()
        return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr

    return convert
