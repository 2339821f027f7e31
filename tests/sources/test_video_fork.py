"""Video reads in a forked child (``multiprocessing`` with fork, a DataLoader's workers).

A source's reads keep files and swscale contexts for the next read; a forked child must
not use the parent's: their swscale threads are not in the child, and their file offsets are
shared with the parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import av
import media
import numpy as np
import pytest

from framepipe.sources.video.source import VideoSource

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")


def _in_child(work: object, timeout_s: float = 30.0) -> int:
    """Run ``work()`` in a forked child: its exit status (0: it returned True), or -1
    when it had not finished after ``timeout_s`` (it is killed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = 0 if work() else 1  # type: ignore[operator]
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


@pytest.fixture(scope="module")
def textured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """640x360 H.264 with B-frames, 4 s: large enough that reads move the file offset."""
    path = tmp_path_factory.mktemp("fork") / "textured.mp4"
    media.ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "4",
        "-c:v", "libx264", "-g", "25", "-bf", "2", str(path),
    )  # fmt: skip
    return path


def _reference(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_a_forked_child_converts_frames_after_its_parent_did(textured: Path) -> None:
    """The parent converted frames (its swscale contexts, with their threads, are pooled
    for the next read); a forked child reading a video converts through contexts of its
    own: one of the parent's waited forever for threads the child does not have."""
    ref = _reference(textured)
    with VideoSource(textured, threads=2) as src:
        src.read([10, 60])

    def child() -> bool:
        with VideoSource(textured, threads=2) as src:
            return np.array_equal(src.read([70]).frames[0], ref[70])

    assert _in_child(child) == 0


def test_a_forked_child_never_reads_through_its_parents_open_files(textured: Path) -> None:
    """A source the parent read keeps its file open for the next read; a child forked with
    it reads through files of its own: the inherited file shares its offset with the
    parent's, so the child's reads moved the parent's (reads in both at once took packets
    from the wrong place: 'frame(s) [462] did not decode')."""
    ref = _reference(textured)
    fds = Path("/proc/self/fd")
    if not fds.exists():
        pytest.skip("no /proc/self/fd")
    src = VideoSource(textured, backend="pyav", threads=1)
    try:
        assert np.array_equal(src.read([30]).frames[0], ref[30])
        mine = [int(fd.name) for fd in fds.iterdir() if _points_at(fd, textured)]
        assert mine, "the read keeps its file open"
        offsets = [os.lseek(fd, 0, os.SEEK_CUR) for fd in mine]

        def child() -> bool:
            want = [95, 50, 80]  # none from packet 0 (that opens a file anew)
            got = src.read(want).frames
            return all(np.array_equal(g, ref[i]) for g, i in zip(got, want))

        assert _in_child(child) == 0
        assert [os.lseek(fd, 0, os.SEEK_CUR) for fd in mine] == offsets
        assert np.array_equal(src.read([31, 90]).frames, np.stack([ref[31], ref[90]]))
    finally:
        src.close()


def _points_at(fd: Path, target: Path) -> bool:
    with contextlib.suppress(OSError):
        return Path(os.readlink(fd)) == target.resolve()
    return False
