"""The reference contours a shape memory's edge profile is read across (`ShapeMemory._edge_level`).

Each half of the memory (every other observation) draws a contour; the profile is read on the
other half across it, so the contour's own noise does not enter the profile.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.boundary import PROFILE_OUTSIDE_PX, signed_distance
from sam4em_live.segment.embedded.window import float32_percentile

if TYPE_CHECKING:
    from collections.abc import Callable

#: The edge profile's reference contours are drawn at this fraction of the particle's equivalent radius of
#: smoothing, at most the second value (px), never less than ``mask_smoothing_px`` (`reference_sigma`).
REFERENCE_SMOOTHING = (0.2, 4.0)

#: One reference: the half read across it, the crop around its contour, signed distances on that crop.
Reference = tuple[int, tuple[slice, slice], np.ndarray]


def reference_sigma(provisional: np.ndarray, mask_smoothing_px: float) -> float:
    """Smoothing (px) of the contours the profile is taken across: `REFERENCE_SMOOTHING` of the size.

    A smoother contour follows less noise; the offset is measured from it and the level read
    back on the same smoothing, so the scale does not enter the mask's size.
    """
    fraction, largest = REFERENCE_SMOOTHING
    sigma = min(largest, fraction * math.sqrt(float(provisional.sum()) / math.pi))
    return max(sigma, mask_smoothing_px)


def crossed_references(halves: np.ndarray, mask: np.ndarray, sigma: float, edge_fraction: float,
                       overlapping: Callable[[np.ndarray], np.ndarray | None]) -> list[Reference] | None:
    """For each half of the memory: the other half, the crop around its contour, signed distances on it.

    The contour is the ``edge_fraction`` contour of one half smoothed by ``sigma`` (the part of it
    that ``overlapping`` keeps). Read on the memory that drew it, a contour is ragged with that
    memory's noise: pixels just inside were let in by noise above the level, those just outside kept
    out by noise below it, and that false step pulled the fitted edge of faint rods and spheres
    0.5-1 px outwards (+5 to +15 % area). The other half's noise is independent of the contour.
    None if a half has no contour.
    """
    references = []
    pad = int(PROFILE_OUTSIDE_PX) + 2
    for drawn in (0, 1):
        smoother = ndimage.gaussian_filter(halves[drawn], sigma)
        peak = float32_percentile(smoother[mask], 90)
        contour = overlapping(smoother > edge_fraction * peak) if peak > 0 else None
        if contour is None:
            return None
        # Only the contour's surroundings enter the profile: distances on that crop alone (cost).
        rows, cols = np.flatnonzero(contour.any(axis=1)), np.flatnonzero(contour.any(axis=0))
        crop = (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))
        references.append((1 - drawn, crop, signed_distance(contour[crop])))
    return references
