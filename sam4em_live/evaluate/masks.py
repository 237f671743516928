"""DAVIS measures for one pair of boolean masks.

- J: region similarity, the Jaccard index |P ∩ G| / |P ∪ G|.
- F: boundary F-measure (Perazzi et al., CVPR 2016): precision and recall of
  boundary pixels matched within a tolerance of ``ceil(0.008 × image diagonal)``
  pixels, combined as 2PR/(P+R).

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


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance_px: int | None = None) -> float:
    """DAVIS boundary F-measure of ``pred`` against ``gt`` (fraction in [0, 1])."""
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    tol = boundary_tolerance_px(pred.shape) if tolerance_px is None else int(tolerance_px)
    box = _crop_box(pred, gt, tol + 2)
    if box is None:
        return 1.0
    pred_b = boundary_map(pred[box])
    gt_b = boundary_map(gt[box])
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    # Distance to the nearest boundary pixel of the other mask (disk dilation ≡ distance ≤ tol).
    near_gt = ndimage.distance_transform_edt(~gt_b) <= tol
    near_pred = ndimage.distance_transform_edt(~pred_b) <= tol
    precision = np.count_nonzero(pred_b & near_gt) / n_pred
    recall = np.count_nonzero(gt_b & near_pred) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
