"""Which parts of a frame the background map may learn from: not the tracked particles, nor a lost one's place.

`background.FlatField` folds frames into a per-block running mean of the background. A block under a
particle must not be learned (the map would learn the particle and divide it out), but the background right
beside a particle must be: a particle that barely moves (real LPTEM motion) otherwise keeps whatever the
first frame guessed beside it, and a darker patch of texture there stays in its mask (issue 16,
`foreign-noise`: masks +11-16 % in area). So a tracked particle withholds the *pixels* of its mask grown by
`WITHHOLD_MARGIN_PX` (its blurred rim), and a block it cuts is learned from the rest of its pixels; a lost
particle's last place withholds whole blocks (its mask is not known).

Coordinates: x = column, y = row, pixels; the map's block (r, c) covers rows r*f .. r*f+f-1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.segment.embedded.morphology import dilate_disc
from sam4em_live.segment.embedded.window import _integer_max, block_mean, zero_padded

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.raster import Placement

#: Pixels within this distance of a tracked particle's mask are not learned (its blurred rim).
WITHHOLD_MARGIN_PX = 3.0
#: A block partly withheld is learned from its other pixels when they are at least this share of it.
MIN_UNCOVERED_SHARE = 0.25


def learn_beside(blocks: np.ndarray, learn: np.ndarray, pixels: np.ndarray, claims: list[Placement],
                 factor: int) -> None:
    """Withhold the pixels of each claimed mask grown by `WITHHOLD_MARGIN_PX`; blocks they cut keep the rest.

    ``blocks`` are the frame's block means (changed in place: a cut block becomes the mean of its uncovered
    pixels), ``learn`` the blocks to learn (cleared where less than `MIN_UNCOVERED_SHARE` is uncovered).
    """
    n_rows, n_cols = learn.shape
    grow = math.ceil(WITHHOLD_MARGIN_PX)
    withheld: np.ndarray | None = None
    regions: list[tuple[int, int, int, int]] = []
    for claim in claims:
        x0, y0, x1, y1 = claim.box
        if not claim.crop.any():
            continue
        r0, c0 = max((y0 - grow) // factor, 0), max((x0 - grow) // factor, 0)
        r1, c1 = min(-(-(y1 + grow) // factor), n_rows), min(-(-(x1 + grow) // factor), n_cols)
        if r0 >= r1 or c0 >= c1:
            continue
        if withheld is None:  # one array for all claims: regions of neighbours overlap
            withheld = np.zeros((n_rows * factor, n_cols * factor), bool)
        grown = dilate_disc(zero_padded(claim.crop, grow), WITHHOLD_MARGIN_PX)  # scipy's, cheaper (issue 23)
        top, left = y0 - grow, x0 - grow  # the grown crop's origin, pixels
        ya, yb = max(top, r0 * factor), min(top + grown.shape[0], r1 * factor)
        xa, xb = max(left, c0 * factor), min(left + grown.shape[1], c1 * factor)
        if ya < yb and xa < xb:
            withheld[ya:yb, xa:xb] |= grown[ya - top : yb - top, xa - left : xb - left]
        regions.append((r0, r1, c0, c1))
    if withheld is None:
        return
    saturated = _integer_max(pixels.dtype) if pixels.dtype.kind in "ui" else None
    for r0, r1, c0, c1 in regions:
        rows, cols = slice(r0 * factor, r1 * factor), slice(c0 * factor, c1 * factor)
        crop = pixels[rows, cols]
        uncovered = ~withheld[rows, cols]
        if saturated is not None:
            uncovered &= crop < saturated
        share = block_mean(uncovered.astype(np.float32), factor)
        sums = block_mean(np.where(uncovered, crop, 0).astype(np.float32), factor)
        enough = share >= MIN_UNCOVERED_SHARE
        blocks[r0:r1, c0:c1] = np.where(enough, sums / np.maximum(share, np.float32(1e-6)), blocks[r0:r1, c0:c1])
        learn[r0:r1, c0:c1] &= enough


def withhold_disc(learn: np.ndarray, x: float, y: float, reach: float, factor: int) -> None:
    """Clear ``learn`` on the blocks of the square around (x, y) with half-size ``reach`` (pixels)."""
    r0, r1 = max(int((y - reach) // factor), 0), max(int(-(-(y + reach + 1) // factor)), 0)
    c0, c1 = max(int((x - reach) // factor), 0), max(int(-(-(x + reach + 1) // factor)), 0)
    learn[r0:r1, c0:c1] = False
