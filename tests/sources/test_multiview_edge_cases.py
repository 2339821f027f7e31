"""Multi-view scenes a careful user still meets: TIFF views with an orientation tag (turned
once, as any viewer shows them), names whose case or digits make the natural order subtle,
and pose files that list names the system refuses or nest JSON absurdly deep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scene_media as sm
from PIL import Image

from framepipe.sources.multiview.source import MultiviewSource

# The EXIF/TIFF orientation tag -> the turn that shows the stored pixels upright.
SHOW = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", sorted(SHOW))
@pytest.mark.parametrize("max_side", [0, 16])
def test_tiff_orientation_is_applied_once(tmp_path: Path, orientation: int, max_side: int) -> None:
    stored = Image.fromarray(sm.view_image(0, size=(60, 40)))  # marker top-left as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "v.tif", exif=exif.tobytes())
    shown = np.asarray(stored.transpose(SHOW[orientation]))
    src = MultiviewSource(tmp_path, max_side=max_side)
    info = src.info()
    frame = src.read([0]).images()[0]
    if max_side == 0:
        assert (info.width, info.height) == (shown.shape[1], shown.shape[0])
        assert np.array_equal(frame, shown)
    else:  # reduced by 4 (60 -> 15): the same picture, smaller
        assert (info.width, info.height) == (frame.shape[1], frame.shape[0])
        small = np.asarray(Image.fromarray(shown).reduce(4))
        assert frame.shape == small.shape
        assert np.abs(frame.astype(int) - small.astype(int)).max() <= 1
