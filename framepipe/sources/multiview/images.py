"""One image file, read the way a multi-view scene needs it: header probing (size, format,
EXIF orientation, a complete JPEG/PNG tail) without decoding pixels, and decoding at a
bounded size (JPEG at reduced scale with ``draft``), orientation applied, every colour mode
converted to 8-bit RGB. Used by :mod:`framepipe.sources.multiview.source`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.errors import DecodeError, SourceError
from framepipe.sources.multiview.poses import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

_TAIL_BYTES = 4096

# EXIF orientation -> PIL transpose method name (as ImageOps.exif_transpose does).
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
"""First bytes of JPEG, PNG, BMP and TIFF files."""


def looks_like_image(head: bytes) -> bool:
    """Whether a file's first bytes (12 or more) are an image's that scenes read (JPEG,
    PNG, WebP, BMP, TIFF), whatever its name."""
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def file_looks_like_image(path: Path) -> bool:
    """:func:`looks_like_image` of a regular file's first bytes (False if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return looks_like_image(f.read(12))
    except OSError:
        return False


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, without decoding pixels."""

    format: str
    """PIL format name (``JPEG``, ``PNG`` ...)."""
    mode: str
    """PIL mode as stored (``RGB``, ``L``, ``I;16``, ``P`` ...)."""
    stored_size: tuple[int, int]
    """(width, height) as PIL decodes it, before the EXIF orientation."""
    orientation: int
    """EXIF orientation still to apply after decoding (1 when absent, and for a TIFF,
    which PIL turns by its tag as it decodes)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as shown, after the EXIF orientation."""
        w, h = self.stored_size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


def _orientation(im: Any) -> int:
    """EXIF orientation from the header; never decodes pixels."""
    from PIL import Image

    try:
        if im.format == "PNG":
            # PngImageFile.getexif() would decode the image to find an eXIf chunk after the
            # pixels; the PNG specification puts it before them, where open() has read it.
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        value = int(exif.get(0x0112, 1))
    except Exception:  # a broken EXIF block is not a broken image
        return 1
    return value if value in range(1, 9) else 1


def _size_and_orientation(im: Any) -> tuple[tuple[int, int], int]:
    """``(size as decoded, orientation left to apply)``.

    Pillow turns a TIFF by its Orientation tag itself when it loads the pixels (and from
    Pillow 11 reports the turned size as soon as the file is opened); applying the tag again
    would turn the picture twice. For a TIFF, then, the size is the turned one and nothing
    is left to apply.
    """
    orientation = _orientation(im)
    if im.format != "TIFF" or orientation == 1:
        return im.size, orientation
    w, h = im.size
    stored = (im.tag_v2.get(256), im.tag_v2.get(257))  # ImageWidth, ImageLength
    if orientation in (5, 6, 7, 8) and (w, h) == stored:  # Pillow 10: not turned yet
        w, h = h, w
    return (w, h), 1


@contextlib.contextmanager
def pillow_warnings_logged(path: Path) -> Iterator[None]:
    """Pillow's warnings while reading ``path`` (a decompression bomb's size, corrupt EXIF)
    logged at debug, never printed: library code does not write to stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.debug("%s: %s", path, w.message)


def probe_image(path: Path) -> ImageHeader:
    """Read ``path``'s header (and, for JPEG and PNG, check that the file is complete).

    Raises :class:`SourceError` naming the file when it is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with pillow_warnings_logged(path), Image.open(path) as im:
            header = ImageHeader(str(im.format), im.mode, *_size_and_orientation(im))
    except UnidentifiedImageError as exc:
        raise SourceError(path, "not a readable image") from exc
    except Image.DecompressionBombError as exc:
        raise SourceError(path, f"image too large to read safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise SourceError(path, f"cannot read image header ({exc})") from exc
    if header.stored_size[0] <= 0 or header.stored_size[1] <= 0:
        raise SourceError(path, f"image has an empty size {header.stored_size}")
    if header.format in ("JPEG", "PNG") and not _tail_ok(path, header.format):
        raise SourceError(path, f"truncated {header.format} (the end of the file is missing)")
    return header


def _tail_ok(path: Path, fmt: str) -> bool:
    """Cheap completeness check: a JPEG ends with its EOI marker, a PNG with IEND. Only when
    the marker is absent from the file's tail is the image decoded (small) to be sure."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            tail = fh.read()
    except OSError:
        return False
    marker = b"\xff\xd9" if fmt == "JPEG" else b"IEND"
    if marker in tail:
        return True
    # Trailers after the image data exist (camera maker notes, padding): decode to be sure.
    from PIL import Image

    try:
        with Image.open(path) as im:
            if fmt == "JPEG":
                im.draft(None, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except Exception:
        return False
    return True


def to_rgb8(im: Any, background: tuple[int, int, int] = (255, 255, 255), factor: int = 1) -> Any:
    """A PIL image of any mode as 8-bit RGB, reduced by ``factor`` (box filter): 16-bit and
    float scaled, transparency composited on ``background``, palette and CMYK converted.

    Memory stays near twice the decoded image: grayscale stays one byte a pixel until it is
    reduced, and transparency is composited in place on the background.
    """
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        img = Image.fromarray(_gray8(im, mode))
    elif mode in ("1", "L") and "transparency" not in im.info:
        img = im.convert("L") if mode == "1" else im
    elif mode == "RGB" and "transparency" not in im.info:
        img = im
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im if mode == "RGBA" else im.convert("RGBA")
        img = Image.new("RGB", rgba.size, background)
        img.paste(rgba, mask=rgba)  # the same pixels as alpha_composite on an opaque colour
        del rgba
    else:
        img = im.convert("RGB")
    if factor > 1:
        img = img.reduce(factor)
    return img if img.mode == "RGB" else img.convert("RGB")


def _gray8(im: Any, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image as uint8 gray, a band of rows at a time (a
    float64 copy of a whole 12000x12000 image would be 1.1 GB)."""
    a = np.asarray(im)
    if mode == "F":
        scale, divisor = (255.0 if _finite_max(a) <= 1.0 else 1.0), 1.0
    else:
        sixteen = mode.startswith("I;16") or int(a.max(initial=0)) > 255  # full range -> 8-bit
        scale, divisor = 1.0, (257.0 if sixteen else 1.0)
    out = np.empty(a.shape, dtype=np.uint8)
    step = max(1, (1 << 20) // max(1, a.shape[1]))
    for y in range(0, a.shape[0], step):
        band = a[y : y + step].astype(np.float64)
        if mode == "F":
            band = np.nan_to_num(band * scale, nan=0.0)
        elif divisor != 1.0:
            band /= divisor
        out[y : y + step] = np.clip(np.rint(band), 0, 255)
    return out


def _finite_max(a: np.ndarray) -> float:
    """The largest finite value of a float array (1.0 when there is none)."""
    tops = [
        float(band[np.isfinite(band)].max(initial=-np.inf))
        for band in np.array_split(a, max(1, a.size >> 20))
    ]
    top = max(tops, default=-np.inf)
    return top if np.isfinite(top) else 1.0


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down (never up) so that its longest side is at most ``max_side``."""
    w, h = size
    if max_side <= 0 or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def plan_size(fmt: str, stored: tuple[int, int], max_side: int) -> tuple[tuple[int, int], int]:
    """The stored-orientation size :func:`decode_image` returns under ``max_side``, and the
    integer reduction that gets there without resampling.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale (the smallest reduction whose longest side
    fits; beyond 1/8 it is then resized); other formats are decoded whole and reduced by
    the smallest integer factor that fits (box filter). Either way the longest side ends in
    ``(max_side / 2, max_side]``: an image that already fits is never resampled, so a
    1920x1080 frame under the default 2048 is returned exactly as stored.
    """
    w, h = stored
    longest = max(w, h)
    if max_side <= 0 or longest <= max_side:
        return stored, 1
    f = -(-longest // max_side)
    if fmt == "JPEG":
        f = next((s for s in (2, 4, 8) if s >= f), 8)
    size = (-(-w // f), -(-h // f))
    if max(size) > max_side:  # a JPEG more than 8 times too large: resize after 1/8
        size = fit_size(size, max_side)
    return size, f


def read_size(header: ImageHeader, max_side: int) -> tuple[int, int]:
    """(width, height) of the frame :func:`decode_image` returns, after the orientation."""
    (w, h), _ = plan_size(header.format, header.stored_size, max_side)
    return (h, w) if header.orientation in (5, 6, 7, 8) else (w, h)


def decode_image(
    path: Path,
    header: ImageHeader,
    *,
    max_side: int = 0,
    size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Decode ``path`` to an upright uint8 HxWx3 array.

    ``size`` (width, height, after orientation) gives an exact output size (aspect not
    kept: the samplers' thumbnails; JPEGs are decoded at the smallest DCT scale that is
    still at least that size). Otherwise the size is :func:`read_size` under ``max_side``.
    """
    from PIL import Image

    swap = header.orientation in (5, 6, 7, 8)
    factor = 1
    if size is not None:
        stored_out = (size[1], size[0]) if swap else size
    else:
        stored_out, factor = plan_size(header.format, header.stored_size, max_side)
    try:
        with pillow_warnings_logged(path), Image.open(path) as im:
            if im.format == "JPEG" and stored_out != im.size:
                w, h = im.size
                # draft() picks the largest DCT scale with a result at least this size
                want = (w // factor, h // factor) if size is None else stored_out
                im.draft(None, (max(1, want[0]), max(1, want[1])))
                factor = 1
            im.load()
            img = to_rgb8(im, background, factor)
            if img.size != stored_out:
                img = img.resize(stored_out, Image.Resampling.BICUBIC, reducing_gap=2.0)
            method = _TRANSPOSE.get(header.orientation)
            if method is not None:
                img = img.transpose(getattr(Image.Transpose, method))
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(
            path, f"cannot decode image ({exc}; --source-opt verify=decode skips such views)"
        ) from exc
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - to_rgb8 guarantees RGB
        raise DecodeError(path, f"decoded to an unexpected shape {arr.shape}")
    return np.ascontiguousarray(arr)
