"""Small-mask morphology for shape refreshes, with less per-call overhead than scipy's.

A shape refresh works on one particle's body grid (up to ~130² pixels) and was
dominated by the fixed cost of ``ndimage.binary_dilation`` / ``binary_fill_holes``
rather than by the pixels. These give the same masks as those calls (the
reference versions, compared in tests/test_embedded_fast_paths.py) in a few
slice operations each: ~0.4 ms less per refresh of an 81² grid (of ~3 ms, on a
frame that also tracks every other particle).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dilate_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=iterations)`` (4-connected cross, zero border)."""
    out = mask.astype(bool, copy=True)
    for _ in range(iterations):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(mask)``: background not 4-connected to the border becomes foreground."""
    background, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    outside = np.zeros(count + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = False  # label 0 is the mask itself
    return ~outside[background]
