"""A battery of hostile inputs (issue 11.5), mixed with good ones, for one CLI run.

:func:`make_battery` writes every case under ``root/in`` (plus a few paths that are given
to the command explicitly, under ``root/named``) and returns the :class:`Case` list: what
each path is and what the run must make of it:

- ``ok``: a good input, one ``ok`` record;
- ``failed``: exactly one ``failed`` record, whose one-line error names the path;
- ``note``: no record, a ``note: skipping <path>: ...`` line during discovery.

Kinds: ``video``, ``scene`` (multi-view folders), ``3d`` (meshes and clouds) and ``fs``
(file-system oddities: link loops, FIFOs, sockets, devices, names that are not UTF-8,
folders named like files). Run it by hand to look at the files::

    python tests/hostile_media.py /tmp/battery
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_plugins
import media
import scene_media

from framepipe.sources.base import Source, register_source
from framepipe.types import FrameBatch, SourceInfo


@register_source
class RaisingSource(Source):
    """Claims ``*.raises`` files: a 6-frame source that fails the way library code does, with
    exceptions that are not framepipe's (``open`` in the name: a ``ValueError`` from
    ``info()``; ``read``: a ``KeyError`` from ``read()``), or that works but makes numpy
    warn (``warn``: 0/0 while opening and reading)."""

    kind: ClassVar[str] = "raises"
    extensions: ClassVar[frozenset[str]] = frozenset({".raises"})

    def info(self) -> SourceInfo:
        if "open" in self.path.name:
            raise ValueError("a pose must hold finite numbers only")
        if "warn" in self.path.name:
            np.zeros(2) / np.zeros(2)  # RuntimeWarning: invalid value encountered
        ts = tuple(i / 30 for i in range(6))
        return SourceInfo(str(self.path), self.kind, 6, 32, 24, fps=Fraction(30),
                          timestamps_s=ts, duration_s=0.2)  # fmt: skip

    def read(self, indices: Sequence[int]) -> FrameBatch:
        if "read" in self.path.name:
            raise KeyError("frame table")
        if "warn" in self.path.name:
            np.log(np.zeros(1))  # RuntimeWarning: divide by zero
        frames = np.full((len(indices), 24, 32, 3), 128, np.uint8)
        return FrameBatch(frames, tuple(indices), timestamps_s=tuple(i / 30 for i in indices))


@dataclass(frozen=True)
class Case:
    path: Path
    kind: str
    expect: str
    """``ok``, ``failed`` or ``note``."""
    why: str
    explicit: bool = False
    """Given to the command by name (else found by searching ``root/in``)."""
    xfail: str | None = None
    """Set while the fix this case needs is not in (names the missing fix)."""


def _rand(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The top-level ISO BMFF boxes of ``data``: (type, whole box)."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, typ = struct.unpack(">I4s", data[pos : pos + 8])
        size = size or len(data) - pos
        out.append((typ, data[pos : pos + size]))
        pos += size
    return out


CUBE_V = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
CUBE_F = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
CUBE_T = [t for a, b, c, d in CUBE_F for t in ((a, b, c), (a, c, d))]


def ascii_ply(vertices: Sequence[Sequence[float]], faces: Sequence[Sequence[int]], n_v: int) -> str:
    head = ["ply", "format ascii 1.0", f"element vertex {n_v}"]
    head += ["property float x", "property float y", "property float z"]
    if faces:
        head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    body = [" ".join(f"{c:g}" for c in v) for v in vertices]
    body += [" ".join(map(str, (len(f), *f))) for f in faces]
    return "\n".join([*head, "end_header", *body]) + "\n"


def binary_ply(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    head = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode()
    body = vertices.astype("<f4").tobytes()
    for f in faces:
        body += struct.pack("<B3i", 3, *map(int, f))
    return head + body


def pcd(points: np.ndarray) -> str:
    head = "\n".join(
        [
            "VERSION .7",
            "FIELDS x y z",
            "SIZE 4 4 4",
            "TYPE F F F",
            "COUNT 1 1 1",
            f"WIDTH {len(points)}",
            "HEIGHT 1",
            "VIEWPOINT 0 0 0 1 0 0 0",
            f"POINTS {len(points)}",
            "DATA ascii",
        ]
    )
    return head + "\n" + "\n".join(" ".join(f"{c:g}" for c in p) for p in points) + "\n"


def obj(vertices: Sequence[Sequence[float]], faces: Sequence[Sequence[int]]) -> str:
    lines = [f"v {x:g} {y:g} {z:g}" for x, y, z in vertices]
    lines += ["f " + " ".join(str(i + 1) for i in f) for f in faces]
    return "\n".join(lines) + "\n"


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height`` (a decompression bomb's
    header), then nothing."""
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def _scene(folder: Path, views: int = 3, **kw: object) -> Path:
    angles = [(360.0 * k / views, 10.0) for k in range(views)]
    scene_media.write_scene(folder, angles, size=(48, 32), **kw)  # type: ignore[arg-type]
    return folder


def _transforms(folder: Path, frames: list[dict[str, object]], **meta: object) -> None:
    doc = {"camera_angle_x": 0.8, **meta, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(doc), encoding="utf-8")


def make_battery(root: Path, *, render_fix: str | None = None) -> list[Case]:
    """Write the battery under ``root``; ``render_fix`` marks the 3D cases that need the
    render source's file validation as xfail with that reason (None: all expected to pass).
    """
    d, named = root / "in", root / "named"
    d.mkdir(parents=True)
    named.mkdir()
    cases: list[Case] = []

    def case(path: Path, kind: str, expect: str, why: str, **kw: object) -> None:
        cases.append(Case(path, kind, expect, why, **kw))  # type: ignore[arg-type]

    # -- video --------------------------------------------------------------------------------
    v = d / "video"
    v.mkdir()
    good = media.h264_mp4(v / "good.mp4", num_frames=12)
    case(good, "video", "ok", "a good H.264 MP4")
    data = good.read_bytes()
    case(engine_plugins.make_video(v / "good2.mp4", 10, seed=3), "video", "ok", "another good one")
    (v / "zero.mp4").write_bytes(b"")
    case(v / "zero.mp4", "video", "failed", "zero-length file")
    for frac in (0.02, 0.3):
        p = v / f"truncated_{int(frac * 100)}.mp4"
        p.write_bytes(data[: int(len(data) * frac)])
        case(p, "video", "failed", f"MP4 cut at {frac:.0%} (its index at the end is gone)")
    for ext in ("mp4", "mkv", "avi", "webm", "mov", "ts"):
        p = v / f"garbage.{ext}"
        p.write_bytes(_rand(4096, seed=len(ext)))
        case(p, "video", "failed", f"random bytes named .{ext}")
    (v / "text.mp4").write_text("this is not a video\n")
    case(v / "text.mp4", "video", "failed", "text named .mp4")
    (v / "ply_inside.mp4").write_text(ascii_ply(CUBE_V, CUBE_T, len(CUBE_V)))
    case(v / "ply_inside.mp4", "video", "failed", "a PLY model named .mp4 (wrong extension)")
    boxes = _boxes(data)
    (v / "header_only.mp4").write_bytes(b"".join(b for t, b in boxes if t != b"mdat"))
    case(v / "header_only.mp4", "video", "failed", "ftyp and moov, no media data")
    (v / "ftyp_only.mp4").write_bytes(b"".join(b for t, b in boxes if t == b"ftyp"))
    case(v / "ftyp_only.mp4", "video", "failed", "an ftyp box and nothing else")
    (v / "zeros.mp4").write_bytes(b"\x00" * 65536)
    case(v / "zeros.mp4", "video", "failed", "64 KiB of zero bytes")
    (v / "huge.y4m.avi").write_bytes(b"YUV4MPEG2 W60000 H60000 F30:1 C420\nFRAME\n" + b"\x80" * 64)
    case(v / "huge.y4m.avi", "video", "failed", "a raw stream claiming 60000x60000 frames")
    media.audio_only(v / "audio_only.mp4", seconds=0.3)
    case(v / "audio_only.mp4", "video", "failed", "audio only, no video stream")
    (v / "sniffed_noext").write_bytes(data[:8] + _rand(2000, seed=9))
    case(v / "sniffed_noext", "video", "failed", "starts like an MP4 (sniffed), then garbage")
    mdat = next(b for t, b in boxes if t == b"mdat")
    start = data.index(mdat) + 16
    (v / "mdat_zeroed.mp4").write_bytes(
        data[:start] + b"\x00" * (len(mdat) - 16) + data[start + len(mdat) - 16 :]
    )
    case(v / "mdat_zeroed.mp4", "video", "failed", "index intact, every frame's data zeroed")
    hang = named / "open_hang.stall"
    hang.write_bytes(b"x")
    case(hang, "video", "failed", "a decoder that hangs while opening", explicit=True)
    for name, why in (
        ("pose_open.raises", "a ValueError from a library while opening"),
        ("bad_read.raises", "a KeyError from a library while reading frames"),
    ):
        (named / name).write_bytes(b"x")
        case(named / name, "video", "failed", why, explicit=True)
    (named / "warn.raises").write_bytes(b"x")
    case(named / "warn.raises", "video", "ok", "readable, but numpy warns", explicit=True)
    segv = named / "open_segv.stall"
    segv.write_bytes(b"x")
    case(segv, "video", "failed", "a decoder that segfaults while opening", explicit=True)

    # -- multi-view scenes -------------------------------------------------------------------
    s = d / "scenes"
    s.mkdir()
    case(_scene(s / "good_scene"), "scene", "ok", "a good scene with transforms.json")
    (named / "empty_scene").mkdir()
    case(named / "empty_scene", "scene", "failed", "an empty folder", explicit=True)
    (named / "no_images").mkdir()
    (named / "no_images" / "a.txt").write_text("x")
    case(named / "no_images", "scene", "failed", "a folder of non-images", explicit=True)
    case(named / "no_images" / "a.txt", "scene", "note", "the non-image in it")
    for name, fmt in (("trunc_jpg", "jpg"), ("trunc_png", "png")):
        f = _scene(s / name, fmt=fmt)
        for img in f.glob(f"*.{fmt}"):
            img.write_bytes(img.read_bytes()[:60])
        case(f, "scene", "failed", f"every {fmt.upper()} view truncated")
    f = _scene(s / "garbage_images", fmt="jpg")
    for img in f.glob("*.jpg"):
        img.write_bytes(_rand(500, seed=4))
    case(f, "scene", "failed", "views of random bytes named .jpg")
    f = s / "bomb"
    _scene(f)
    for img in f.glob("*.png"):
        img.write_bytes(png_header(100_000, 100_000))
    case(f, "scene", "failed", "every view's header claims 100000x100000 pixels")
    f = s / "bad_pose_nan"
    _scene(f)
    doc = json.loads((f / "transforms.json").read_text())
    doc["frames"][1]["transform_matrix"][0][3] = float("nan")
    (f / "transforms.json").write_text(json.dumps(doc))
    case(f, "scene", "failed", "transforms.json with a NaN in a pose")
    f = s / "bad_pose_shape"
    _scene(f)
    doc = json.loads((f / "transforms.json").read_text())
    doc["frames"][0]["transform_matrix"] = [[1, 0], [0, 1]]
    (f / "transforms.json").write_text(json.dumps(doc))
    case(f, "scene", "failed", "transforms.json with a 2x2 pose")
    f = s / "missing_files"
    f.mkdir()
    _transforms(
        f,
        [{"file_path": f"gone_{k}.png", "transform_matrix": np.eye(4).tolist()} for k in range(3)],
    )
    case(f, "scene", "failed", "transforms.json naming images that are not there")
    f = s / "bad_json"
    _scene(f)
    (f / "transforms.json").write_text('{"frames": [')
    case(f, "scene", "failed", "transforms.json cut short (not JSON)")
    f = s / "frames_not_list"
    _scene(f)
    (f / "transforms.json").write_text('{"camera_angle_x": 0.8, "frames": 7}')
    case(f, "scene", "failed", "transforms.json whose frames is a number")
    f = s / "colmap_garbage"
    _scene(f, transforms=False)
    (f / "sparse" / "0").mkdir(parents=True)
    (f / "sparse" / "0" / "images.txt").write_text("1 2 3 nonsense\n\x00\x01garbage\n")
    (f / "sparse" / "0" / "cameras.txt").write_text("1 PINHOLE nope\n")
    case(f, "scene", "failed", "COLMAP text model of garbage")
    f = s / "colmap_bin_garbage"
    _scene(f, transforms=False)
    (f / "sparse" / "0").mkdir(parents=True)
    (f / "sparse" / "0" / "images.bin").write_bytes(struct.pack("<Q", 2**40) + _rand(64, 5))
    (f / "sparse" / "0" / "cameras.bin").write_bytes(struct.pack("<Q", 1) + _rand(16, 6))
    case(f, "scene", "failed", "COLMAP binary model claiming 2^40 images")

    # -- 3D models ------------------------------------------------------------------------------
    m = d / "models"
    m.mkdir()
    (m / "cube.ply").write_text(ascii_ply(CUBE_V, CUBE_T, len(CUBE_V)))
    case(m / "cube.ply", "3d", "ok", "a good ASCII PLY cube")
    (m / "cube.obj").write_text(obj(CUBE_V, CUBE_T))
    case(m / "cube.obj", "3d", "ok", "a good OBJ cube")
    sphere = np.random.default_rng(0).normal(size=(2000, 3))
    (m / "sphere.pcd").write_text(pcd(sphere / np.linalg.norm(sphere, axis=1, keepdims=True)))
    case(m / "sphere.pcd", "3d", "ok", "a good PCD cloud")

    def bad3d(name: str, content: bytes | str, why: str, needs_fix: bool = True) -> None:
        p = m / name
        if isinstance(content, str):
            p.write_text(content)
        else:
            p.write_bytes(content)
        case(p, "3d", "failed", why, xfail=render_fix if needs_fix else None)

    bad3d(
        "wrong_count.ply",
        ascii_ply(CUBE_V, CUBE_T, 100),
        "ASCII PLY whose header says 100 vertices, 8 given",
    )
    cube_bin = binary_ply(np.asarray(CUBE_V, np.float32), np.asarray(CUBE_T))
    bad3d("truncated_binary.ply", cube_bin[: len(cube_bin) - 100], "binary PLY cut short")
    bad3d("garbage.off", _rand(3000, 7), "random bytes named .off")
    bad3d("garbage_text.off", "OFF\nbanana apple\n1 2 3\n", "OFF with words for counts")
    bad3d(
        "oob_faces.obj",
        obj(CUBE_V, [(0, 1, 99), (5, 6, 1000)]),
        "OBJ faces index vertices that do not exist",
    )
    bad3d("no_faces.obj", "# nothing\nvn 0 0 1\n", "OBJ with no vertices and no faces")
    bad3d("empty.ply", b"", "zero-length PLY", needs_fix=False)
    bad3d(
        "header_only.ply", ascii_ply([], [], 0), "PLY header declaring no vertices", needs_fix=False
    )
    bad3d("garbage.stl", _rand(2000, 8), "random bytes named .stl")
    bad3d(
        "stl_claims_many.stl",
        b"\x00" * 80 + struct.pack("<I", 10**8) + _rand(100, 9),
        "binary STL claiming 10^8 triangles",
    )
    bad3d(
        "garbage.glb",
        b"glTF" + struct.pack("<II", 2, 10**6) + _rand(100, 10),
        "GLB header, then garbage",
    )
    bad3d(
        "bad.gltf",
        json.dumps(
            {
                "asset": {"version": "2.0"},
                "meshes": [{"primitives": [{"attributes": {"POSITION": 5}}]}],
            }
        ),
        "glTF JSON pointing at accessors that do not exist",
    )
    bad3d("nan_only.pcd", pcd(np.full((50, 3), np.nan)), "PCD whose every point is NaN")
    identical = m / "identical.ply"
    identical.write_text(ascii_ply([(0.5, 0.5, 0.5)] * 100_000, [], 100_000))
    # degenerate but readable: rendered (a dot, with a warning) or refused, quickly either way
    case(identical, "3d", "any", "100000 identical points")
    bad3d(
        "inf_coords.ply",
        ascii_ply([(float("inf"), 0, 0), (0, float("-inf"), 1), (0, 0, 1)], [(0, 1, 2)], 3),
        "PLY with infinite coordinates",
    )
    bad3d("garbage.xyz", "one two three\nfour five six\n", "XYZ cloud of words")
    sparse = m / "sparse.ply"
    sparse.write_text(ascii_ply([], [], 10_000_000).replace("ascii", "binary_little_endian"))
    os.truncate(sparse, 500 * 2**20)
    case(
        sparse,
        "3d",
        "failed",
        "500 MB sparse file (zeros) after a valid PLY header",
        xfail=render_fix,
    )

    # -- the file system ---------------------------------------------------------------------------
    f = d / "fs"
    f.mkdir()
    (f / "a.mp4").symlink_to("b.mp4")
    (f / "b.mp4").symlink_to("a.mp4")
    case(f / "a.mp4", "fs", "failed", "a.mp4 -> b.mp4 -> a.mp4")
    case(f / "b.mp4", "fs", "failed", "b.mp4 -> a.mp4 -> b.mp4")
    (f / "self.ply").symlink_to("self.ply")
    case(f / "self.ply", "fs", "failed", "a link to itself named like a model")
    (f / "self_noext").symlink_to("self_noext")
    case(f / "self_noext", "fs", "note", "a link to itself, no extension")
    loops = f / "loops"
    loops.mkdir()
    (loops / "x.mp4").symlink_to("y.mp4")
    (loops / "y.mp4").symlink_to("x.mp4")
    case(loops / "x.mp4", "fs", "failed", "a folder holding a link loop")
    case(loops / "y.mp4", "fs", "failed", "the other half of that loop")
    (loops / "up").symlink_to("..")
    case(loops / "up", "fs", "note", "a folder link to a folder above it")
    (loops / "me").symlink_to(".")
    case(loops / "me", "fs", "note", "a folder link to itself")
    (f / "dangling.mp4").symlink_to("nowhere.mp4")
    case(f / "dangling.mp4", "fs", "failed", "a broken link")
    os.mkfifo(f / "pipe_noext")
    case(f / "pipe_noext", "fs", "note", "a FIFO with no extension in a searched folder")
    os.mkfifo(f / "pipe.mp4")
    case(f / "pipe.mp4", "fs", "failed", "a FIFO named .mp4")
    os.mkfifo(named / "given_pipe")
    case(named / "given_pipe", "fs", "failed", "a FIFO given by name", explicit=True)
    (f / "zero_noext").symlink_to("/dev/zero")
    case(f / "zero_noext", "fs", "note", "a link to /dev/zero, no extension")
    (f / "zero.mp4").symlink_to("/dev/zero")
    case(f / "zero.mp4", "fs", "failed", "a link to /dev/zero named .mp4")
    (named / "urandom.ply").symlink_to("/dev/urandom")
    case(
        named / "urandom.ply", "fs", "failed", "a link to /dev/urandom given by name", explicit=True
    )
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(f / "sock_noext"))
    sock.close()  # the socket file stays
    case(f / "sock_noext", "fs", "note", "a UNIX socket")
    bad_name = Path(os.fsdecode(os.fsencode(f) + b"/\xff\xfe.mp4"))
    bad_name.write_bytes(b"not a video at all")
    case(bad_name, "fs", "failed", "garbage under a name that is not UTF-8")
    good_name = Path(os.fsdecode(os.fsencode(f) + b"/good \xe9\xff.mp4"))
    good_name.write_bytes(data)
    case(good_name, "fs", "ok", "a good video under a name that is not UTF-8")
    (f / "folder.mp4").mkdir()
    case(f / "folder.mp4", "fs", "note", "an empty folder named like a video")
    (v / "zz_scene_link").symlink_to(s / "good_scene")  # searched after scenes/
    case(v / "zz_scene_link", "fs", "note", "a second link to a scene already found")
    return cases


if __name__ == "__main__":
    for c in make_battery(Path(sys.argv[1])):
        print(f"{c.expect:6} {c.kind:5} {c.path}  ({c.why})")
