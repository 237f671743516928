"""DAVIS measures for one pair of boolean masks.

- J: region similarity, the Jaccard index |P ∩ G| / |P ∪ G|.
- F: boundary F-measure (Perazzi et al., CVPR 2016): precision and recall of
  boundary pixels matched within a tolerance of ``ceil(0.008 × image diagonal)``
  pixels, combined as 2PR/(P+R).
- F at a size-tied tolerance (`size_tolerance_px`): the same measure with the tolerance a
  fraction of the true particle's equivalent diameter, at least 1 px. DAVIS' tolerance was
  made for objects hundreds of pixels across: 12 px at 1024² swallows every boundary error of
  a 20-px particle, so its F saturates at 100.

Both are fractions in [0, 1]; two empty masks score 1 (DAVIS convention).
Computation is done on the bounding box of the two masks (plus the tolerance)
so small particles on large frames stay cheap.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: DAVIS boundary tolerance as a fraction of the image diagonal.
BOUNDARY_TOLERANCE_FRACTION = 0.008


def boundary_tolerance_px(shape: tuple[int, int]) -> int:
    """ceil(0.008 × diagonal) pixels (6 px at 512², 12 px at 1024²)."""
    return math.ceil(BOUNDARY_TOLERANCE_FRACTION * math.hypot(shape[0], shape[1]))


#: Size-tied boundary tolerance as a fraction of the true mask's equivalent diameter (floor: 1 px).
SIZE_TOLERANCE_FRACTION = 0.1


def size_tolerance_px(area_px: float) -> float:
    """max(1, 0.1 × equivalent diameter) px, the diameter of the disk of ``area_px`` pixels: 2·√(area/π).

    2 px for a 20-px particle, 5 px for a 50-px one; 1 px for anything under 10 px across.
    """
    diameter = 2.0 * math.sqrt(max(float(area_px), 0.0) / math.pi)
    return max(1.0, SIZE_TOLERANCE_FRACTION * diameter)


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P ∩ G| / |P ∪ G|; 1.0 when both are empty."""
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner contour: mask pixels with a 4-neighbour outside the mask.

    The image border does not count as a boundary (as in DAVIS' ``seg2bmap``).
    """
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def _crop_box(pred: np.ndarray, gt: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    both = pred | gt
    rows = np.flatnonzero(both.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(both.any(axis=0))
    return (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance_px: float | None = None) -> float:
    """DAVIS boundary F-measure of ``pred`` against ``gt`` (fraction in [0, 1])."""
    tol = boundary_tolerance_px(pred.shape) if tolerance_px is None else tolerance_px
    return boundary_f_at(pred, gt, (tol,))[0]


def boundary_f_at(pred: np.ndarray, gt: np.ndarray, tolerances_px: tuple[float, ...]) -> tuple[float, ...]:
    """The boundary F-measure at each tolerance (px, a boundary pixel matches within distance ≤ tol).

    One pair of distance transforms serves every tolerance.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    box = _crop_box(pred, gt, math.ceil(max(tolerances_px)) + 2)
    if box is None:
        return tuple(1.0 for _ in tolerances_px)
    pred_b = boundary_map(pred[box])
    gt_b = boundary_map(gt[box])
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        return tuple(1.0 for _ in tolerances_px)
    if n_pred == 0 or n_gt == 0:
        return tuple(0.0 for _ in tolerances_px)
    # Distance to the nearest boundary pixel of the other mask (disk dilation ≡ distance ≤ tol).
    to_gt = ndimage.distance_transform_edt(~gt_b)[pred_b]
    to_pred = ndimage.distance_transform_edt(~pred_b)[gt_b]
    scores = []
    for tol in tolerances_px:
        precision = np.count_nonzero(to_gt <= tol) / n_pred
        recall = np.count_nonzero(to_pred <= tol) / n_gt
        scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return tuple(scores)
