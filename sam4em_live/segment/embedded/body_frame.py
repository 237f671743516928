"""The particle's body frame: its sampling grid, the warp into it, and the mask's rotational symmetry.

A particle's memory (`shape.ShapeMemory`) is sampled on a square grid that moves and turns with the
particle: u along the pose angle, v across, grid index (r, c) <-> v = r - half, u = c - half (pixels).
The symmetry of the mask on this grid decides how many template angles the search tries
(`templates.TemplateBanks`): none for a disc, a half turn of them for a rod, a quarter for a square.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.segment.embedded.window import bilinear, zero_padded

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Rotations tried to detect shape symmetry (degrees) and the IoU that counts as symmetric.
SYMMETRY_CANDIDATES_DEG = (90.0, 120.0, 180.0)
SYMMETRY_IOU = 0.85
#: A mask unchanged (IoU >= SYMMETRY_IOU) by this odd rotation is treated as isotropic (discs) ...
ISOTROPY_TEST_DEG = (37.0,)
#: ... and so is one with round second moments (axis ratio <= LUMPY_DISC_MAX_AXIS_RATIO) that the odd
#: rotation maps onto itself (IoU >= LUMPY_DISC_MIN_IOU) within LUMPY_DISC_MARGIN as well as the best
#: symmetric rotation does: a noisy disc, not a rod or a cube (the margin allows for quarter and half
#: turns being exact on the pixel grid while odd ones are interpolated).
LUMPY_DISC_MAX_AXIS_RATIO = 1.25
LUMPY_DISC_MIN_IOU = 0.7
LUMPY_DISC_MARGIN = 0.08


def cell_axis(cells: int, factor: int, offset: float) -> np.ndarray:
    """Pixel coordinates (float32, read-only) of ``cells`` grid cells ``factor`` apart from ``offset``."""
    axis = np.arange(cells, dtype=np.float32) * factor + np.float32(offset)
    axis.flags.writeable = False
    return axis


def body_offsets(half: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) body coordinates of the (2 half + 1)² grid, each of shape (S, S)."""
    axis = np.arange(-half, half + 1, dtype=np.float32)
    return np.broadcast_to(axis[None, :], (axis.size, axis.size)), np.broadcast_to(axis[:, None], (axis.size, axis.size))


def frame_to_body(dx: np.ndarray, dy: np.ndarray, angles_deg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Body (u, v) of frame offsets (dx, dy) from the particle centre at each pose angle: (A, *dx.shape) each."""
    turns = [math.radians(a) for a in angles_deg]
    axes = (len(turns),) + (1,) * dx.ndim
    c = np.array([math.cos(t) for t in turns], np.float32).reshape(axes)
    s = np.array([math.sin(t) for t in turns], np.float32).reshape(axes)
    return dx * c + dy * s, dy * c - dx * s


def symmetry_period(mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    """Smallest rotation (degrees) mapping the mask onto itself; 0 if isotropic, 360 if none.

    ``u``, ``v`` are the grid's body coordinates (`body_offsets`). A small particle's learned mask
    is a lumpy disc: no rotation maps it onto itself exactly, but an odd one does as well as any
    symmetric one does, so it counts as isotropic (one template angle instead of a full turn of them).
    """
    ious = rotation_ious(mask, u, v)
    odd = min(ious[p] for p in ISOTROPY_TEST_DEG)
    best_symmetric = max(ious[p] for p in SYMMETRY_CANDIDATES_DEG)
    lumpy_disc = (odd >= LUMPY_DISC_MIN_IOU and odd >= best_symmetric - LUMPY_DISC_MARGIN
                  and axis_ratio(mask, u, v) <= LUMPY_DISC_MAX_AXIS_RATIO)
    if odd >= SYMMETRY_IOU or lumpy_disc:
        return 0.0
    return next((p for p in SYMMETRY_CANDIDATES_DEG if ious[p] >= SYMMETRY_IOU), 360.0)


def rotation_ious(mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> dict[float, float]:
    """IoU of the mask with itself turned by each tested rotation (degrees); one sampling for all."""
    half = mask.shape[0] // 2
    area = max(mask.sum(), 1)
    periods = (*ISOTROPY_TEST_DEG, *SYMMETRY_CANDIDATES_DEG)
    # Only the square around the mask's disc is turned (the whole grid cost 2-3 ms a refresh, issue 23): a turn
    # keeps distances from the centre, so outside the farthest mask pixel + 2 px (bilinear reads 1 px around a
    # point) both the mask and its turned copy are empty and add nothing to either sum. The same IoUs.
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return dict.fromkeys(periods, 0.0)
    reach = int(math.ceil(math.sqrt(float(((rows - half) ** 2 + (cols - half) ** 2).max())))) + 2
    keep = slice(max(half - reach, 0), min(half + reach + 1, mask.shape[0]))
    part = mask[keep, keep]
    turned_u, turned_v = frame_to_body(u[keep, keep], v[keep, keep], periods)
    turned = bilinear(zero_padded(mask.astype(np.float32)), turned_v + half, turned_u + half) > 0.5
    return {period: (one & part).sum() / max((one | part).sum(), area)
            for period, one in zip(periods, turned, strict=True)}


def axis_ratio(mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    """Major / minor axis of the mask's second moments (1 for a disc or a square)."""
    mask_u, mask_v = u[mask], v[mask]
    if mask_u.size < 3:
        return 1.0
    eig = np.linalg.eigvalsh(np.cov(np.stack([mask_u, mask_v])))
    return float(np.sqrt(max(eig[1], 1e-9) / max(eig[0], 1e-9)))
