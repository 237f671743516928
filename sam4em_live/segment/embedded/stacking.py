"""``np.stack`` of the batched paths' arrays in one `np.concatenate` (issue 23).

The batched near searches and rasterisation stack the arrays of N particles ~30 times a frame; `np.stack`'s
Python layer (an `asanyarray`, a shape check and an expand-dims view per array, then one concatenate) costs
~1.5 us an array and ~5 us a call, more than copying 16 windows of 32² floats. Arrays of one shape laid end
to end along their first axis and reshaped are the same array (the same dtype promotion, the same values in
the same order, C-contiguous); anything else -- 0-d arrays, shapes that differ -- goes to `np.stack`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["stack", "stack_columns"]


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays)`` (a new first axis)."""
    shape = arrays[0].shape if arrays else ()
    if not shape or any(a.shape != shape for a in arrays):
        return np.stack(arrays)
    return np.concatenate(arrays).reshape(len(arrays), *shape)


def stack_columns(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays, axis=1)`` of 1-D arrays of one length: the same values, as a transposed view."""
    if not arrays or arrays[0].ndim != 1:
        return np.stack(arrays, axis=1)
    return stack(arrays).T
