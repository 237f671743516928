"""The static map's conclusions from its running mean, and where masks fall on its blocks (`static_map`).

`find_features` finds the static features (blocks standing out from their smoothed surroundings) and what
dividing them out needs (their relief, the local background, each feature's size); `touches_feature` is
the reference reading of the feature blocks under a mask's box. The block geometry of masks on the map --
how much of each block a mask covers (`block_coverage`), which blocks any of several masks touch
(`covered_blocks`), the blocks a tracked particle keeps from being learned (`withhold_mask`) -- is shared by
the map's update, its identity test and its division. Split from static_map.py (no behaviour change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.segment.embedded.raster import Placement

#: A footprint cell counts only once it has been updated this often.
MIN_UPDATES = 1
#: A map block is a static feature where its contrast (the map smoothed at `FEATURE_SMOOTHING_BLOCKS` against
#: the map smoothed at `FEATURE_SURROUND_BLOCKS`) stands `FEATURE_SIGMAS` robust sigmas of that contrast and
#: `FEATURE_MIN_CONTRAST` out (either polarity); features are widened by `FEATURE_MARGIN_BLOCKS` so a match
#: touching one is checked.
FEATURE_SMOOTHING_BLOCKS = 1.5
FEATURE_SURROUND_BLOCKS = 10.0
FEATURE_SIGMAS = 4.0
FEATURE_MIN_CONTRAST = 0.01
FEATURE_MARGIN_BLOCKS = 1


def touches_feature(features: np.ndarray, factor: int, placed: Placement) -> bool:
    """Whether a placed mask's box touches a feature block: the reference of `StaticMap.near_feature`."""
    x0, y0, x1, y1 = placed.box
    return bool(features[y0 // factor : (y1 - 1) // factor + 1, x0 // factor : (x1 - 1) // factor + 1].any())


def find_features(mean: np.ndarray, updates: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Static features (blocks standing out from their surroundings, widened by a margin) and what `divided_out` needs.

    The map is smoothed a little (`FEATURE_SMOOTHING_BLOCKS`: single blocks are noisy early on) and compared
    with a heavily smoothed copy (`FEATURE_SURROUND_BLOCKS`: the local background, gradients included). Then
    the relief (the map over that background on the features, 1 elsewhere), the background, and per block
    the size (blocks) of its feature (0 off the features); these three are None without a feature.
    """
    known = updates >= MIN_UPDATES
    if not known.any():
        return np.zeros(mean.shape, bool), None, None, None
    filled = np.where(known, mean, np.float32(np.median(mean[known])))
    smooth = ndimage.gaussian_filter(filled, FEATURE_SMOOTHING_BLOCKS, mode="nearest")
    surround = np.maximum(ndimage.gaussian_filter(filled, FEATURE_SURROUND_BLOCKS, mode="nearest"), 1e-6)
    contrast = np.abs(1.0 - smooth / surround)
    values = contrast[known]
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    standing = known & (contrast > max(centre + FEATURE_SIGMAS * spread, FEATURE_MIN_CONTRAST))
    if not standing.any():
        return standing, None, None, None
    features = ndimage.binary_dilation(standing, iterations=FEATURE_MARGIN_BLOCKS)
    relief = np.where(features & known, filled / surround, np.float32(1.0)).astype(np.float32)
    labels, count = ndimage.label(features & known)
    sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.int32)
    sizes[0] = 0
    return features, relief, surround.astype(np.float32), sizes[labels]


def block_coverage(crop: np.ndarray, x0: int, y0: int, factor: int, margin: int) -> np.ndarray:
    """Fraction of each map block covered by a mask at (x0, y0), with ``margin`` empty blocks on every side."""
    bx0, by0 = x0 // factor, y0 // factor
    oy, ox = y0 - by0 * factor + margin * factor, x0 - bx0 * factor + margin * factor
    rows = -(-(oy + crop.shape[0]) // factor) + margin
    cols = -(-(ox + crop.shape[1]) // factor) + margin
    padded = np.zeros((rows * factor, cols * factor), np.float32)
    padded[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return padded.reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def covered_blocks(placements: Sequence[Placement], r0: int, c0: int, shape: tuple[int, ...], factor: int) -> np.ndarray:
    """Blocks (of the map rectangle from block (r0, c0), ``shape``) that any of ``placements`` touches."""
    out = np.zeros(shape, bool)
    for placed in placements:
        x0, y0, _, _ = placed.box
        touched = block_coverage(placed.crop, x0, y0, factor, 0) > 0
        top, left = y0 // factor - r0, x0 // factor - c0
        ya, yb = max(top, 0), min(top + touched.shape[0], shape[0])
        xa, xb = max(left, 0), min(left + touched.shape[1], shape[1])
        if ya < yb and xa < xb:
            out[ya:yb, xa:xb] |= touched[ya - top : yb - top, xa - left : xb - left]
    return out


def withhold_mask(learn: np.ndarray, claim: Placement, factor: int) -> None:
    """Clear ``learn`` on every block a claimed mask touches.

    The mask, not its box: in a dense field the box covers the neighbours, which must stay learnable
    (they may be the static features a lost particle must not be re-acquired on).
    """
    x0, y0, _, _ = claim.box
    bx0, by0 = x0 // factor, y0 // factor
    touched = block_coverage(claim.crop, x0, y0, factor, 0) > 0
    rows, cols = touched.shape
    n_rows, n_cols = learn.shape
    rows, cols = min(rows, n_rows - by0), min(cols, n_cols - bx0)
    if rows > 0 and cols > 0:
        learn[by0 : by0 + rows, bx0 : bx0 + cols] &= ~touched[:rows, :cols]
