"""Rasterising a particle's body-frame mask at a pose (frame pixels), by nearest lookup in a 2x mask.

The learned mask is kept as a signed level (> 0 inside) on the body grid.
`mask_lookup` upsamples it once per shape refresh to a grid twice as fine
(bilinear, then thresholded) with a margin wide enough for every lookup;
`rasterize_mask` then needs only index arithmetic and one gather per pose.
"""

from __future__ import annotations

import math

import numpy as np


def supersampled(level: np.ndarray) -> np.ndarray:
    """The mask ``level > 0`` on a grid twice as fine (bilinear level > 0).

    Index 2 k + 1 is body pixel k; even indices are the midpoints between pixels.
    """
    padded = np.pad(level.astype(np.float32, copy=False), 1, constant_values=-1.0)
    rows = np.empty((2 * padded.shape[0] - 1, padded.shape[1]), np.float32)
    rows[0::2] = padded
    rows[1::2] = 0.5 * (padded[:-1] + padded[1:])
    fine = np.empty((rows.shape[0], 2 * padded.shape[1] - 1), np.float32)
    fine[:, 0::2] = rows
    fine[:, 1::2] = 0.5 * (rows[:, :-1] + rows[:, 1:])
    return fine[1:-1, 1:-1] > 0


def mask_lookup(level: np.ndarray, half: int, radius_px: float) -> tuple[np.ndarray, float]:
    """The supersampled mask padded so that `rasterize_mask` never indexes outside it, and its centre index.

    ``level`` is the (2 half + 1)² body-grid level; ``radius_px`` the mask's radius.
    `rasterize_mask` looks up pixels within ``radius_px + 2`` of the centre along x and y,
    i.e. body offsets up to sqrt(2) times that: 2 sqrt(2) (radius + 2) lookup cells.
    """
    fine = supersampled(level)
    centre = 2 * half + 1  # index 2 k + 1 is body pixel k; body pixel `half` is the centre
    need = int(math.ceil(2 * math.sqrt(2) * (radius_px + 2))) + 2
    margin = max(0, need - centre, need - (fine.shape[0] - 1 - centre))
    return np.pad(fine, margin), float(centre + margin)


def rasterize_mask(lookup: tuple[np.ndarray, float], radius_px: float, x: float, y: float, angle_deg: float,
                   shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray, int] | None:
    """Mask at a pose: (bbox x0, y0, x1, y1 half-open, crop) clipped to ``shape``, and the unclipped area.

    None if the mask lies entirely outside the frame.
    """
    reach = radius_px + 1.0
    rows, cols = shape
    ux0, ux1 = int(math.floor(x - reach)), int(math.ceil(x + reach)) + 1
    uy0, uy1 = int(math.floor(y - reach)), int(math.ceil(y + reach)) + 1
    x0, x1, y0, y1 = max(ux0, 0), min(ux1, cols), max(uy0, 0), min(uy1, rows)
    if x0 >= x1 or y0 >= y1:
        return None
    t = math.radians(angle_deg)
    c2, s2 = np.float32(2 * math.cos(t)), np.float32(2 * math.sin(t))
    dx = np.arange(ux0, ux1, dtype=np.float32) - np.float32(x)
    dy = np.arange(uy0, uy1, dtype=np.float32) - np.float32(y)
    # Nearest lookup in the 2x mask: index = 2 * (body coordinate) + centre, body u = dx c + dy s and
    # v = dy c - dx s. Rows and columns of the index are outer sums; the lookup table's margin keeps
    # every index of the bounding box in range, so there is no clipping.
    table, centre = lookup
    width = table.shape[1]
    # Indices are positive, so truncating value + 0.5 rounds to nearest (one op less than rint + cast).
    index = np.add.outer(c2 * dy + np.float32(0.5), centre - s2 * dx).astype(np.int32)  # lookup row
    index *= width
    index += np.add.outer(s2 * dy + np.float32(0.5), centre + c2 * dx).astype(np.int32)  # + lookup column
    full = table.ravel().take(index)
    crop = full[y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0]
    return (x0, y0, x1, y1), crop, int(full.sum())
