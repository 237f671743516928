"""Where a lost particle might be: blob candidates on a low-resolution copy of the whole frame.

Run only while some particle is lost, and only every ``reacquire_interval_frames``:
the frame is block-averaged (2x the particle's coarse factor, strided sums), divided by a
heavily smoothed copy of itself (removes background gradients), smoothed at
the particle's scale and its strongest local contrast maxima away from other
particles are returned. Each candidate is then verified by the full pose search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.window import block_mean

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.tracker import TrackedParticle


def _block_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    return block_mean(pixels[:rows, :cols], factor)


def candidate_positions(pixels: np.ndarray, track: TrackedParticle, claims: list[Placement],
                        count: int) -> list[tuple[float, float]]:
    """Up to ``count`` (x, y) frame positions, strongest first, not on claimed particles."""
    factor = max(2, 2 * track.memory.coarse_factor)
    scale = track.memory.radius_px / factor
    coarse = _block_mean(pixels, factor)
    if min(coarse.shape) < 3:
        return []
    background = ndimage.gaussian_filter(coarse, max(3.0 * scale, 2.0), mode="nearest")
    darkness = track.polarity * (1.0 - coarse / np.maximum(background, 1e-6))
    blob = ndimage.gaussian_filter(darkness, max(0.5 * scale, 0.7), mode="nearest")
    reach = int(np.ceil(scale))
    for claim in claims:
        x0, y0, x1, y1 = claim.box
        blob[max(y0 // factor - reach, 0) : y1 // factor + reach + 1,
             max(x0 // factor - reach, 0) : x1 // factor + reach + 1] = -np.inf
    peaks = (blob == ndimage.maximum_filter(blob, size=2 * reach + 1)) & np.isfinite(blob)
    rows, cols = np.nonzero(peaks)
    if rows.size == 0:
        return []
    order = np.argsort(-blob[rows, cols])[:count]
    half = (factor - 1) / 2
    return [(float(cols[k] * factor + half), float(rows[k] * factor + half)) for k in order]
