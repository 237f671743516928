"""`DigitalMicrographLiveView`: the live view of a Gatan camera in DigitalMicrograph. The ONLY module that
calls DigitalMicrograph (its Python module ``DigitalMicrograph``, GMS 3.4+); everything else is tested
without it.

Which image: the one named ``image_name`` (DigitalMicrograph names a camera's live view after the camera,
e.g. "OneView View"), else the front-most image when the script starts. Each ``grab()`` copies the
image's pixels (``GetNumArray`` is a view of DigitalMicrograph's buffer, which the camera overwrites) and
reads the calibration of axis 0 (``GetDimensionScale`` / ``GetDimensionUnitString``) and the exposure
from the acquisition tags. DigitalMicrograph does not say when the live image was refreshed nor count its
frames, so ``frame_number`` is None and the publisher tells new frames by their pixels.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .adapter import LiveFrame, pixel_size_nm

#: Tag paths DigitalMicrograph's camera acquisition writes the exposure under (seconds).
EXPOSURE_TAGS = ("Acquisition:Parameters:High Level:Exposure (s)", "DataBar:Exposure Time (s)")


def _dm() -> Any:
    try:
        import DigitalMicrograph
    except ImportError as exc:
        raise ImportError("the DigitalMicrograph module exists only inside Gatan DigitalMicrograph (GMS 3.4+); "
                          "outside it, use FileLiveView for a dry run") from exc
    return DigitalMicrograph


class DigitalMicrographLiveView:
    """The live image of a camera in DigitalMicrograph (see the module docstring)."""

    def __init__(self, image_name: str | None = None) -> None:
        dm = _dm()
        image = dm.FindImageByName(image_name) if image_name else dm.GetFrontImage()
        if image is None or not image.IsValid():
            raise RuntimeError("no live image: start the camera's live view (or name its image) first")
        self._image = image
        self.name = image.GetName()

    def grab(self) -> LiveFrame | None:
        image = self._image
        pixels = np.array(image.GetNumArray(), copy=True)  # the camera overwrites DigitalMicrograph's buffer
        stamp = time.time()
        if pixels.ndim != 2:
            return None
        scale = image.GetDimensionScale(0)
        unit = image.GetDimensionUnitString(0)
        return LiveFrame(pixels, stamp, None, pixel_size_nm(scale, unit), self._exposure_s())

    def _exposure_s(self) -> float | None:
        tags = self._image.GetTagGroup()
        for path in EXPOSURE_TAGS:
            found, value = tags.GetTagAsFloat(path)
            if found and value > 0:
                return float(value)
        return None

    def close(self) -> None:
        self._image = None
