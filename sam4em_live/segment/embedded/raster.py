"""Rasterising a particle's body-frame mask at a pose (frame pixels), by nearest lookup in a 2x mask.

The learned mask is kept as a signed level (> 0 inside) on the body grid.
`mask_lookup` upsamples it once per shape refresh to a grid twice as fine
(bilinear, then thresholded) with a margin wide enough for every lookup;
`rasterize_mask` then needs only index arithmetic and one gather per pose.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class MaskLookup(NamedTuple):
    """The supersampled mask, padded for every lookup, and the index of the body centre in it."""

    table: np.ndarray  # bool, 2x the body grid
    centre: float


class PixelBox(NamedTuple):
    """Half-open pixel rectangle in frame coordinates: columns ``x0 .. x1 - 1``, rows ``y0 .. y1 - 1``."""

    x0: int
    y0: int
    x1: int
    y1: int


class Placement(NamedTuple):
    """A particle's mask placed in a frame: the crop at ``box`` (clipped to the frame) and its unclipped area."""

    box: PixelBox
    crop: np.ndarray  # bool, shape (y1 - y0, x1 - x0)
    area_px: int  # pixels of the whole mask, inside the frame or not


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


def mask_lookup(level: np.ndarray, half: int, radius_px: float) -> MaskLookup:
    """The supersampled mask padded so that `rasterize_mask` never indexes outside it, and its centre index.

    ``level`` is the (2 half + 1)² body-grid level; ``radius_px`` the mask's radius.
    `rasterize_mask` looks up pixels within ``radius_px + 2`` of the centre along x and y,
    i.e. body offsets up to sqrt(2) times that: 2 sqrt(2) (radius + 2) lookup cells.
    """
    fine = supersampled(level)
    centre = 2 * half + 1  # index 2 k + 1 is body pixel k; body pixel `half` is the centre
    need = int(math.ceil(2 * math.sqrt(2) * (radius_px + 2))) + 2
    margin = max(0, need - centre, need - (fine.shape[0] - 1 - centre))
    return MaskLookup(np.pad(fine, margin), float(centre + margin))


def rasterize_mask(lookup: MaskLookup, radius_px: float, x: float, y: float, angle_deg: float,
                   shape: tuple[int, int]) -> Placement | None:
    """The mask at a pose (frame pixels, degrees), clipped to a frame of ``shape``; None if wholly outside."""
    reach = radius_px + 1.0
    rows, cols = shape
    ux0, ux1 = int(math.floor(x - reach)), int(math.ceil(x + reach)) + 1
    uy0, uy1 = int(math.floor(y - reach)), int(math.ceil(y + reach)) + 1
    x0, x1, y0, y1 = max(ux0, 0), min(ux1, cols), max(uy0, 0), min(uy1, rows)
    if x0 >= x1 or y0 >= y1:
        return None
    t = math.radians(angle_deg)
    # Scalar factors as 0-d float32 arrays: the floats of np.float32 scalars, without numpy's scalar
    # conversion in each ufunc call (see window._ONE).
    c2, s2 = np.array(2 * math.cos(t), np.float32), np.array(2 * math.sin(t), np.float32)
    dx = np.arange(ux0, ux1, dtype=np.float32) - np.array(x, np.float32)
    dy = np.arange(uy0, uy1, dtype=np.float32) - np.array(y, np.float32)
    # Nearest lookup in the 2x mask: index = 2 * (body coordinate) + centre, body u = dx c + dy s and
    # v = dy c - dx s. Rows and columns of the index are outer sums; the lookup table's margin keeps
    # every index of the bounding box in range, so there is no clipping.
    table, centre = lookup.table, np.array(lookup.centre, np.float32)
    width = table.shape[1]
    # Indices are positive, so truncating value + 0.5 rounds to nearest (one op less than rint + cast).
    index = np.add.outer(c2 * dy + _HALF, centre - s2 * dx).astype(np.int32)  # lookup row
    index *= width
    index += np.add.outer(s2 * dy + _HALF, centre + c2 * dx).astype(np.int32)  # + lookup column
    full = table.ravel().take(index)
    area = int(np.count_nonzero(full))  # the sum of a bool array
    if area == 0:  # a mask thinner than the lookup's sampling still covers the pixel at its centre
        full[math.floor(y + 0.5) - uy0, math.floor(x + 0.5) - ux0] = True
        area = 1
    crop = full[y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0]
    return Placement(PixelBox(x0, y0, x1, y1), crop, area)


_HALF = np.array(0.5, np.float32)
