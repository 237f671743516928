"""Where the first frame's prompted particles lie on the background map: kept out of its one-frame fit.

On the first frame of a stream the background map is fitted to that frame alone (`background.FlatField`).
A prompted particle must not enter that fit: a faint one sits in texture of its own contrast and would be
learned as texture (and divided out: its prompt refused), and a large faint one (80-120 px across at a CNR
of 0.3) is not rejected as an outlier near its blurred rim, so the fitted illumination bent round it (issue
16, docs/benchmarks.md "Mask boundary bias"). A prompt's place is the blocks near its positive points
(`POINT_HOLD_OUT_BLOCKS`) and round its box.

Tried and not kept (docs/benchmarks.md, "Background model: foreign-noise"): growing a point's place to the
particle's extent (the connected blocks round the point that stand out with its polarity). In texture of the
particle's own contrast the extent ran into the texture beside it, and from a point at the particle's edge
it took the wrong polarity: foreign-noise with points 2 px inside the outline then had 3 hops and a refused
prompt per seed; the large faint particles it was for are kept whole by the fit's noise test instead.

Coordinates: x = column, y = row, pixels; the map's block (r, c) covers rows r*f .. r*f+f-1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.particles import Prompt, has_finite_coordinates

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.particles import ParticleEdit

#: Blocks held out around a prompt's point (32 px at 256², 64 px at 1024²: a particle up to twice that across)
#: and around a prompt's box.
POINT_HOLD_OUT_BLOCKS, BOX_HOLD_OUT_BLOCKS = 8, 1


def prompt_places(prompts: Sequence[ParticleEdit], factor: int, grid: tuple[int, ...]) -> np.ndarray:
    """Blocks of the map (``grid``, blocks of ``factor`` px) held out for ``prompts``: near their points and boxes."""
    held = np.zeros(grid, bool)
    block_y, block_x = (np.mgrid[0 : grid[0], 0 : grid[1]] + 0.5) * factor  # block centres, pixels
    for prompt in prompts:
        if not isinstance(prompt, Prompt) or not has_finite_coordinates(prompt):
            continue  # not validated yet: its seeding refuses it
        for (x, y), label in zip(prompt.points, prompt.labels, strict=False):
            if label == 0:  # a negative point marks background: nothing to hold out
                continue
            reach = POINT_HOLD_OUT_BLOCKS * factor
            held |= (block_x - x) ** 2 + (block_y - y) ** 2 <= reach * reach
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            margin = BOX_HOLD_OUT_BLOCKS * factor
            r0, r1 = max(int((y0 - margin) // factor), 0), max(int(-(-(y1 + margin) // factor)), 0)
            c0, c1 = max(int((x0 - margin) // factor), 0), max(int(-(-(x1 + margin) // factor)), 0)
            held[r0:r1, c0:c1] = True
    return held
