"""A blanked beam: the frame's overall intensity followed over time (split from static_map.py, unchanged).

A frame far darker than the recent ones carries no information about where particles are: the segmenter
reports every particle absent and keeps their state (`EmbeddedSegmenter.track`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: A frame whose sampled mean falls below this fraction of the recent level is a blanked (or nearly
#: blanked) beam: it carries no information about where particles are.
BLANK_FRACTION = 0.15
#: Rows sampled for the exposure level (whole rows: contiguous memory, ~10 us for 1024²; a strided
#: every-16th-pixel sample cost ~0.2 ms in cache misses) and its running weight.
EXPOSURE_ROWS, EXPOSURE_WEIGHT = 16, 0.1


class Exposure:
    """The frame's overall intensity, followed over time, to recognise a blanked beam."""

    def __init__(self) -> None:
        self.level: float | None = None

    def blanked(self, pixels: np.ndarray) -> bool:
        """Whether this frame is far darker than the recent ones (dose steps of x0.45 or x1.6 are not)."""
        sample = float(pixels[:: max(pixels.shape[0] // EXPOSURE_ROWS, 1)].mean())
        if self.level is None:
            self.level = sample
            return False
        if sample < BLANK_FRACTION * self.level:
            return True
        self.level += EXPOSURE_WEIGHT * (sample - self.level)
        return False
