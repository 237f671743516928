"""Pixels given to particles within one frame: the claims, and what they leave to the next particle.

Particles are settled one after the other (best match first); each settled particle's
placed mask is a claim, and the particles after it see those pixels as taken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.raster import Placement

#: Two masks overlapping this much (IoU) are one particle claimed twice.
CONFLICT_IOU = 0.6


def paste(full: np.ndarray, x0: int, y0: int, crop: np.ndarray) -> None:
    """``full[y0:, x0:] |= crop`` where they overlap (``x0``, ``y0`` may be negative)."""
    rows, cols = full.shape
    ya, yb = max(y0, 0), min(y0 + crop.shape[0], rows)
    xa, xb = max(x0, 0), min(x0 + crop.shape[1], cols)
    if ya < yb and xa < xb:
        full[ya:yb, xa:xb] |= crop[ya - y0 : yb - y0, xa - x0 : xb - x0]


def claimed(claims: list[Placement], x0: int, y0: int, edge: int) -> np.ndarray | None:
    """Pixels of the window at (x0, y0) already given to other particles this frame (None: none)."""
    out: np.ndarray | None = None
    for claim in claims:
        bx0, by0, bx1, by1 = claim.box
        if bx1 <= x0 or by1 <= y0 or bx0 >= x0 + edge or by0 >= y0 + edge:
            continue
        if out is None:
            out = np.zeros((edge, edge), dtype=bool)
        paste(out, bx0 - x0, by0 - y0, claim.crop)
    return out


def conflicts(placed: Placement, claims: list[Placement]) -> bool:
    """Whether a placed mask is mostly one already claimed (IoU with any claim >= CONFLICT_IOU)."""
    (x0, y0, x1, y1), crop = placed.box, placed.crop
    area = int(crop.sum())
    for claim in claims:
        bx0, by0, bx1, by1 = claim.box
        if bx1 <= x0 or by1 <= y0 or bx0 >= x1 or by0 >= y1:
            continue
        taken = np.zeros(crop.shape, dtype=bool)
        paste(taken, bx0 - x0, by0 - y0, claim.crop)
        inter = int((taken & crop).sum())
        if inter / max(area + int(claim.crop.sum()) - inter, 1) >= CONFLICT_IOU:
            return True
    return False


def unclaimed_area(placed: Placement, claims: list[Placement]) -> int:
    """Pixels of a placed mask (in the frame) not claimed by particles settled before it this frame."""
    (x0, y0, x1, y1), crop = placed.box, placed.crop
    taken = claimed(claims, x0, y0, max(x1 - x0, y1 - y0))
    if taken is None:
        return int(crop.sum())
    return int((crop & ~taken[: y1 - y0, : x1 - x0]).sum())
