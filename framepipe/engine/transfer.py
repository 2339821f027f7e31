"""Moving decoded frames from a worker process to the main process.

Frames travel through POSIX shared memory: the worker copies a batch's arrays into one
shared block and sends only its name and the arrays' shapes; the main process copies them
out and frees the block. That is about 2.4x faster than pickling the arrays through the pipe
(8 frames of 1080p: 71 ms against 170 ms a clip, see BENCHMARKS.md) and keeps the pipe
messages small. Small batches, or a shared-memory area with too little room, fall back to
sending the arrays in the message itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from framepipe.types import FrameBatch

log = logging.getLogger(__name__)

SHM_MIN_BYTES = 1 << 20
"""Batches smaller than this are pickled into the message (shared memory is not worth it)."""

_SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class PackedFrames:
    """A batch's frames described for the trip between processes.

    Either ``arrays`` holds the frames themselves (in-band), or ``shm_name`` names a shared
    memory block holding ``shapes`` arrays of uint8, back to back.
    """

    stacked: bool
    """Whether the frames were one N x H x W x 3 array (else a list of H x W x 3 arrays)."""
    shapes: tuple[tuple[int, ...], ...]
    shm_name: str | None = None
    arrays: tuple[np.ndarray, ...] | None = None


def _shm_has_room(nbytes: int) -> bool:
    try:
        st = os.statvfs(_SHM_DIR)
    except OSError:
        return os.name != "posix" or not os.path.isdir(_SHM_DIR)
    # Leave headroom: touching pages past a full tmpfs kills the process with SIGBUS.
    return st.f_bavail * st.f_frsize > 2 * nbytes + (64 << 20)


def pack_frames(batch: FrameBatch, *, use_shm: bool = True) -> tuple[FrameBatch, PackedFrames]:
    """Split ``batch`` into a frame-less :class:`FrameBatch` shell and its packed frames.

    The shell keeps indices, timestamps and views (small); :func:`unpack_frames` joins them
    again in the other process.
    """
    stacked = isinstance(batch.frames, np.ndarray)
    arrays = [batch.frames] if stacked else [np.asarray(f) for f in batch.frames]
    arrays = [np.ascontiguousarray(a, dtype=np.uint8) for a in arrays]
    shapes = tuple(tuple(int(d) for d in a.shape) for a in arrays)
    nbytes = sum(a.nbytes for a in arrays)
    shell = replace(batch, frames=np.zeros((len(batch.indices), 1, 1, 3), np.uint8))
    if use_shm and nbytes >= SHM_MIN_BYTES and _shm_has_room(nbytes):
        try:
            name = _to_shm(arrays, nbytes)
        except OSError as exc:
            log.debug("shared memory unavailable (%s); sending frames in the message", exc)
        else:
            return shell, PackedFrames(stacked, shapes, shm_name=name)
    return shell, PackedFrames(stacked, shapes, arrays=tuple(arrays))


def _to_shm(arrays: list[np.ndarray], nbytes: int) -> str:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=max(1, nbytes))
    try:
        offset = 0
        for a in arrays:
            view = np.ndarray(a.shape, np.uint8, buffer=shm.buf, offset=offset)
            view[...] = a
            offset += a.nbytes
            del view
        return shm.name
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    finally:
        shm.close()


def unpack_frames(shell: FrameBatch, packed: PackedFrames) -> FrameBatch:
    """The batch with its frames back (copied out of shared memory, which is then freed)."""
    if packed.arrays is not None:
        arrays = list(packed.arrays)
    else:
        assert packed.shm_name is not None
        arrays = _from_shm(packed.shm_name, packed.shapes)
    frames: Any = arrays[0] if packed.stacked else arrays
    return replace(shell, frames=frames)


def _from_shm(name: str, shapes: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    try:
        out: list[np.ndarray] = []
        offset = 0
        for shape in shapes:
            view = np.ndarray(shape, np.uint8, buffer=shm.buf, offset=offset)
            out.append(view.copy())
            offset += view.nbytes
            del view
        return out
    finally:
        shm.close()
        shm.unlink()


def discard(packed: PackedFrames) -> None:
    """Free the shared memory of frames nobody will read (a run that stops early)."""
    if packed.shm_name is None:
        return
    from multiprocessing import shared_memory

    try:
        shm = shared_memory.SharedMemory(name=packed.shm_name)
    except OSError:
        return
    shm.close()
    shm.unlink()
