"""Exact frame reads with PyAV: seek to a keyframe, decode forward, take frames by label.

The wanted frames are grouped by the keyframe each must be decoded from. Groups are shared
out, in order, among up to ``threads`` workers, each with its own demuxer and single-threaded
decoder (PyAV releases the GIL while decoding, so the workers run at once). A worker seeks
only when its next group starts past where it is (a group that starts at the first packet
is read from a freshly opened file, never after a seek), checks where the seek landed, and
labels every packet with its decode position (see :mod:`framepipe.sources.video.decode`): a
frame is taken when its label is a wanted frame's packet, so index ``i`` is the ``i``-th
frame a full decode outputs whatever the container's timestamps say. Frames must come out in
index order, else :class:`IndexMismatch`. On the way to a wanted frame, it tells the decoder
to skip frames nothing refers to (``skip_frame = NONREF``), which never changes the frames
that are decoded, except in streams with packed B-frames and in damaged ones (a damaged
picture is filled in from whatever was decoded before it), where it is therefore off. The
decoder is opened before that (a decoder that reads ``skip_frame`` only when opened,
libdav1d, then never skips), on one thread, or for a damaged stream on a plain decode's
threads (see :func:`framepipe.sources.video.decode.plain_decoder`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framepipe.errors import DecodeError
from framepipe.sources.video.decode import (
    MISSING,
    open_decoder,
    packet_ident,
    plain_decoder,
)
from framepipe.sources.video.index import (
    IndexMismatch,
    VideoIndex,
    av_reason,
    open_container,
    video_stream,
)

log = logging.getLogger(__name__)

_INHERITED: list[tuple[Any, Any]] = []
"""Files a forked child's readers inherited from the parent (see PyAVReader._forget_if_forked)."""

Store = Callable[[int, Any], None]
"""``store(index, frame)``: convert a decoded frame and put it where it belongs."""


@dataclass
class _Group:
    """Frames decoded from one keyframe: decode positions ``key_pos .. end_pos``."""

    key_pos: int
    end_pos: int
    targets: dict[int, int] = field(default_factory=dict)
    """label (decode position of the packet that makes the frame) -> frame index; frame
    index -> frame index when the index is not seekable (frames are counted)."""

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
    if not index.seekable:
        return [_Group(0, index.num_packets - 1, {i: i for i in wanted})] if wanted else []
    groups: dict[int, _Group] = {}
    for i in wanted:
        k = index.start_key_pos(i)
        d = int(index.frame_decode_pos[i])
        g = groups.get(k)
        if g is None:
            g = groups[k] = _Group(k, d)
        g.end_pos = max(g.end_pos, d)
        g.targets[d] = i
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
        # counted frames, packed B-frames, damage: skip nothing (see VideoIndex.seekable, ...)
        self.skip_nonref = skip_nonref and index.seekable and not (index.packed or index.damaged)
        # built once here, then shared read-only by the workers
        index.pos_of  # noqa: B018
        index.packet_frame  # noqa: B018
        # files a read's workers left open, for the next read's: opening parses the whole
        # container (an MP4's sample tables grow with its length), never once per clip
        self._idle: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def read(self, wanted: Sequence[int], store: Store) -> None:
        """Decode the frames ``wanted``, handing each to ``store(index, frame)`` once.

        ``store`` is called from the worker threads, each index from one thread only.
        """
        groups = plan_groups(self.index, sorted(set(wanted)))
        shares = split_work(groups, self.threads)
        done: set[int] = set()
        if len(shares) == 1:
            done |= self._work(shares[0], store)
        elif shares:
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
        out: set[int] = set()
        opened: tuple[Any, Any] | None = self._take_idle()  # maybe where a read stopped
        fresh = False  # nothing demuxed from ``opened`` yet
        kept = False
        try:
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
                got: set[int] = set()
                for skip in (True, False) if self.skip_nonref else (False,):
                    rest = {p: i for p, i in targets.items() if i not in got}
                    if not rest:
                        break
                    if not skip and self.skip_nonref:
                        log.debug("%s: retrying a run without frame skipping", idx.path)
                    if opened is None or (start == 0 and not fresh):
                        # the start of the stream is read from a freshly opened file: a
                        # seek back to packet 0 can land after it (MPEG-TS/PS, and files
                        # whose first packets are not keyframes or carry no timestamps)
                        if opened is not None:
                            opened[0].close()
                            opened = None
                        opened = self._open()
                        fresh = True
                    container, stream = opened
                    got |= self._run(container, stream, start, end_pos, rest, store, skip, fresh)
                    fresh = False
                out |= got
            if opened is not None:
                with self._lock:
                    self._idle.append(opened)
                kept = True
        except av.error.FFmpegError as exc:
            raise DecodeError(idx.path, f"decoding failed ({av_reason(exc)})") from None
        finally:
            if opened is not None and not kept:  # a failed read: never reuse its file
                opened[0].close()
        return out

    def _take_idle(self) -> tuple[Any, Any] | None:
        """A (container, stream) a former read left open in this process, or None."""
        self._forget_if_forked()
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _forget_if_forked(self) -> None:
        """In a forked child, the files left open are the parent's: their file offsets are
        shared with it (reads in both would move each other's), and their decoder's threads
        are not here. They are kept, never used nor closed; the child opens its own."""
        if self._pid != os.getpid():
            _INHERITED.extend(self._idle)
            self._idle, self._lock, self._pid = [], threading.Lock(), os.getpid()

    def close(self) -> None:
        """Close the files reads left open (a later read opens its own)."""
        self._forget_if_forked()
        with self._lock:
            idle, self._idle = self._idle, []
        for container, _ in idle:
            container.close()

    def _open(self) -> tuple[Any, Any]:
        """A freshly opened file and its video stream, the decoder opened on one thread."""
        container = open_container(self.index.path)
        try:
            stream = video_stream(container, self.index.path)
            cc = stream.codec_context
            if self.index.damaged:
                plain_decoder(cc)
            else:
                cc.thread_count = 1
            open_decoder(cc)  # before any skip_frame change (see open_decoder)
        except BaseException:
            container.close()
            raise
        return container, stream

    def _run(
        self,
        container: Any,
        stream: Any,
        key_pos: int,
        end_pos: int,
        targets: dict[int, int],
        store: Store,
        skip: bool,
        fresh: bool = False,
    ) -> set[int]:
        """Decode packets ``key_pos .. end_pos`` (or until every target is out); ``fresh``:
        nothing has been demuxed from ``container`` yet (packet 0 comes without a seek)."""
        import av

        idx = self.index
        cc = stream.codec_context
        out: set[int] = set()
        if fresh and key_pos == 0:
            demux: Any = container.demux(stream)
            packet, pos = next_packet(demux), 0
        else:
            landed = seek_to(container, stream, idx, key_pos)
            if landed is None:
                return out
            demux, packet, pos = landed
        take = _Taker(idx, targets, store, out)
        mode = "DEFAULT"
        cc.skip_frame = mode
        try:
            while packet is not None:
                check_packet(idx, packet, pos)
                packet.pts = pos  # the label: the decoder copies it to the frame it makes
                want = "NONREF" if skip and pos not in targets else "DEFAULT"
                if want != mode:
                    cc.skip_frame = mode = want
                try:
                    take(cc.decode(packet))
                except av.error.InvalidDataError as exc:
                    log.debug("%s: skipping a bad packet (%s)", idx.path, av_reason(exc))
                if pos >= end_pos or len(out) == len(targets):
                    break
                packet = next_packet(demux)
                pos += 1
            cc.skip_frame = "DEFAULT"
            if len(out) < len(targets):
                take(cc.decode(None))
        finally:
            demux.close()  # a run stops once it has its frames: see decode_labels
            cc.skip_frame = "DEFAULT"
            cc.flush_buffers()
        return out


class _Taker:
    """Maps the frames a run decodes to indices, checks their order, stores the wanted."""

    def __init__(
        self, index: VideoIndex, targets: dict[int, int], store: Store, out: set[int]
    ) -> None:
        self.index = index
        self.frame_of = index.packet_frame
        self.targets = targets
        self.store = store
        self.out = out
        self.last = -1
        self.counted = not index.seekable

    def __call__(self, frames: list[Any]) -> None:
        idx = self.index
        for frame in frames:
            if self.counted:  # decoding from the start: the k-th frame out is frame k
                i = self.last + 1
            else:
                label = -1 if frame.pts is None else int(frame.pts)
                i = int(self.frame_of[label]) if 0 <= label < len(self.frame_of) else -1
                if i < 0:
                    if idx.order == "decoded":
                        continue  # a frame no full decode outputs (e.g. after a seek): never wanted
                    raise IndexMismatch(
                        idx.path, f"the decoder put out a frame the index does not hold ({label})"
                    )
                if i <= self.last:
                    raise IndexMismatch(
                        idx.path,
                        f"the decoder put out frame {i} after frame {self.last}: its order is "
                        "not the one the container's timestamps give",
                    )
            self.last = i
            t = self.targets.get(int(idx.frame_decode_pos[i]) if not self.counted else i)
            if t is not None and t not in self.out:
                self.store(t, frame)
                self.out.add(t)


def seek_to(container: Any, stream: Any, index: VideoIndex, key_pos: int) -> Any:
    """Seek so that demuxing resumes at or before packet ``key_pos``.

    Returns ``(demux, first packet, its decode position)``, or None at the end of the
    stream. Where the seek landed is checked (timestamp and size of the first packet); a
    landing after ``key_pos`` or on an unknown packet seeks earlier, then to the start.
    """
    ts = index.packet_ts
    if index.seekable and key_pos > 0:
        pos_of = index.pos_of
        seek_ts = int(ts[key_pos])
        for _ in range(2):
            container.seek(seek_ts, stream=stream, backward=True, any_frame=False)
            demux = container.demux(stream)
            first = next_packet(demux)
            if first is None:
                return None
            fpos = _landed_at(index, first, pos_of, key_pos)
            if fpos >= 0:
                return demux, first, fpos
            demux.close()
            # landed after the keyframe we need (or somewhere unknown): aim earlier
            step = int(index.pts[-1] - index.pts[0]) // max(1, index.num_frames)
            seek_ts -= step * 8 + 1
    return _seek_start(container, stream, index)


_BEFORE_ALL = 1 << 40
"""Ticks before the first packet's timestamp where a second seek to the start aims."""


def _seek_start(container: Any, stream: Any, index: VideoIndex) -> Any:
    """Seek back to packet 0: to its timestamp, and where a demuxer that seeks by decode
    time (MPEG-TS/PS, fragmented MP4) lands after it, to a time before every packet."""
    import av

    ts = index.packet_ts
    timed = ts[ts != MISSING]
    earliest = int(timed.min()) if len(timed) else 0
    targets = [earliest if ts[0] == MISSING else int(ts[0]), earliest - _BEFORE_ALL]
    first: Any = None
    for k, target in enumerate(targets):
        try:
            container.seek(target, stream=stream, backward=True, any_frame=True)
        except av.error.FFmpegError:  # AVI, FLV: no seek before the start
            if k == 0:
                raise
            break
        demux = container.demux(stream)
        first = next_packet(demux)
        if first is None:
            return None
        ident = packet_ident(first, index.packet_ts_kind)
        if ident == int(ts[0]) and first.size == int(index.packet_size[0]):
            return demux, first, 0
        demux.close()
    check_packet(index, first, 0)  # raises: the demuxer does not go back to packet 0
    return None


def _landed_at(index: VideoIndex, packet: Any, pos_of: dict[int, int], key_pos: int) -> int:
    """Decode position of ``packet`` (the first after a seek) at or before ``key_pos``, told
    by its timestamp and size; -1 when no such packet is in the index."""
    ident = packet_ident(packet, index.packet_ts_kind)
    pos = pos_of.get(ident, -1)
    if 0 <= pos <= key_pos and int(index.packet_size[pos]) == packet.size:
        return pos
    if pos < 0:
        return -1
    # a timestamp several packets share (an invisible frame's, say): the last that fits
    same = np.flatnonzero(
        (index.packet_ts[: key_pos + 1] == ident)
        & (index.packet_size[: key_pos + 1] == packet.size)
    )
    return int(same[-1]) if len(same) else -1


def check_packet(index: VideoIndex, packet: Any, pos: int) -> None:
    """The packet at decode position ``pos`` must be the one the index holds there."""
    if (
        pos >= index.num_packets
        or packet_ident(packet, index.packet_ts_kind) != int(index.packet_ts[pos])
        or packet.size != int(index.packet_size[pos])
    ):
        raise IndexMismatch(index.path, f"the demuxer's packet {pos} is not the index's")


def next_packet(demux: Any) -> Any:
    """The next packet the index counts (not empty), or None at the end (PyAV's flush may
    raise IndexError after a new stream: :func:`demuxed`); called per packet, so no
    generator is made for each."""
    with contextlib.suppress(IndexError):
        for packet in demux:
            if packet.size:
                return packet
    return None
