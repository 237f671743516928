"""Where the first frame's prompted particles lie on the background map: kept out of its one-frame fit.

On the first frame of a stream the background map is fitted to that frame alone (`background.FlatField`).
A prompted particle must not enter that fit: a faint one sits in texture of its own contrast and would be
learned as texture (and divided out: its prompt refused), and a large faint one (80-120 px across at a CNR
of 0.3) is not rejected as an outlier near its blurred rim, so the fitted illumination bent round it, the
correction switched on for a flat frame and the texture step took a third of its area with it (issue 16,
docs/benchmarks.md "Mask boundary bias").

A prompt's place is the blocks near its positive points (`POINT_HOLD_OUT_BLOCKS`) and its box, grown by the
particle's own extent: the connected blocks round a point that stand out of the frame's background with the
point's polarity (`particle_extent`), so a particle larger than the fixed disc is held out whole.

Coordinates: x = column, y = row, pixels; the map's block (r, c) covers rows r*f .. r*f+f-1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.particles import Prompt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.particles import ParticleEdit

#: Blocks held out around a prompt's point whatever the frame shows, and around a prompt's box.
POINT_HOLD_OUT_BLOCKS, BOX_HOLD_OUT_BLOCKS = 8, 1
#: A block is part of a particle's extent when its (1-block smoothed) deviation from the background has the
#: point's polarity and exceeds this many robust sigmas and `EXTENT_FRACTION` of the deviation at the point
#: (in texture of the particle's own contrast a lower bar let the extent run into the darker texture beside
#: it, and the texture under the particle was then guessed from farther away: foreign-noise MoNet seed 2 lost
#: a particle on frame 2). The extent is searched this far (blocks) from the point and grown by
#: `EXTENT_GROW_BLOCKS` (the blurred rim, below the bar).
EXTENT_SIGMAS, EXTENT_FRACTION = 1.5, 0.7
EXTENT_REACH_BLOCKS, EXTENT_GROW_BLOCKS = 24, 2
#: Smallest robust spread of the deviation (a noise-free frame would otherwise take any deviation).
MIN_SPREAD = 0.002


def prompt_places(prompts: Sequence[ParticleEdit], ratio: np.ndarray | None, factor: int,
                  grid: tuple[int, ...]) -> np.ndarray:
    """Blocks of the map (``grid``, blocks of ``factor`` px) held out for ``prompts``.

    Near their positive points and boxes, plus each point's particle extent in ``ratio`` (the frame's block
    means divided by its fitted background, about 1) when ``ratio`` is given.
    """
    held = np.zeros(grid, bool)
    block_y, block_x = (np.mgrid[0 : grid[0], 0 : grid[1]] + 0.5) * factor  # block centres, pixels
    deviation = None if ratio is None else _smoothed_deviation(ratio)
    for prompt in prompts:
        if not isinstance(prompt, Prompt):
            continue
        for (x, y), label in zip(prompt.points, prompt.labels, strict=False):
            if label == 0:  # a negative point marks background: nothing to hold out
                continue
            reach = POINT_HOLD_OUT_BLOCKS * factor
            held |= (block_x - x) ** 2 + (block_y - y) ** 2 <= reach * reach
            if deviation is not None:
                held |= particle_extent(deviation, int(y // factor), int(x // factor))
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            margin = BOX_HOLD_OUT_BLOCKS * factor
            r0, r1 = max(int((y0 - margin) // factor), 0), max(int(-(-(y1 + margin) // factor)), 0)
            c0, c1 = max(int((x0 - margin) // factor), 0), max(int(-(-(x1 + margin) // factor)), 0)
            held[r0:r1, c0:c1] = True
    return held


def particle_extent(deviation: np.ndarray, row: int, col: int) -> np.ndarray:
    """Blocks of the particle at block (``row``, ``col``): connected, standing out with its polarity, grown.

    ``deviation`` is `_smoothed_deviation` of the frame's ratio to its background. The polarity is the sign
    of the deviation at the point (a dark particle on a bright background or a bright one on a dark one).
    All False when the point is off the grid or does not stand out.
    """
    extent = np.zeros(deviation.shape, bool)
    n_rows, n_cols = deviation.shape
    if not (0 <= row < n_rows and 0 <= col < n_cols):
        return extent
    r0, r1 = max(row - EXTENT_REACH_BLOCKS, 0), min(row + EXTENT_REACH_BLOCKS + 1, n_rows)
    c0, c1 = max(col - EXTENT_REACH_BLOCKS, 0), min(col + EXTENT_REACH_BLOCKS + 1, n_cols)
    window = deviation[r0:r1, c0:c1]
    centre = window[max(row - r0 - 1, 0) : row - r0 + 2, max(col - c0 - 1, 0) : col - c0 + 2]
    polarity = 1.0 if float(centre.mean()) >= 0 else -1.0
    level = max(EXTENT_SIGMAS, EXTENT_FRACTION * abs(float(centre.mean())))
    standing = polarity * window > level
    labels, _ = ndimage.label(standing)
    touched = labels[max(row - r0 - 1, 0) : row - r0 + 2, max(col - c0 - 1, 0) : col - c0 + 2]
    ids = np.unique(touched[touched > 0])
    if ids.size == 0:
        return extent
    own = ndimage.binary_dilation(np.isin(labels, ids), iterations=EXTENT_GROW_BLOCKS)
    extent[r0:r1, c0:c1] = own
    return extent


def _smoothed_deviation(ratio: np.ndarray) -> np.ndarray:
    """The ratio's deviation from its median, smoothed by 1 block, in robust sigmas of itself."""
    deviation = ndimage.gaussian_filter(ratio / float(np.median(ratio)) - 1.0, 1.0, mode="nearest")
    centre = float(np.median(deviation))
    spread = max(1.4826 * float(np.median(np.abs(deviation - centre))), MIN_SPREAD)
    return (deviation - centre) / spread
