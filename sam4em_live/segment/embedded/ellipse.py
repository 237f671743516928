"""The ellipse that best explains a noisy contrast image: a robust first shape of a particle.

At per-pixel CNR < 1 a thresholded region is ragged and often too small or too
large; fitting an ellipse (centre, orientation, semi-axes) by matched filtering
integrates the whole particle instead. Its IoU with rods, discs, squares and
triangles is ~0.8-0.9, and the appearance memory learns the true outline once
enough frames are averaged.
"""

from __future__ import annotations

import math

import numpy as np

#: Relative semi-axis sizes tried first.
ELLIPSE_SCALES = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.45)


def matched_ellipse(darkness: np.ndarray, mask: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """The ellipse that best matches the raw contrast, started from ``mask``'s moments.

    A single frame at CNR < 1 gives a ragged thresholded region; an ellipse
    whose size, orientation and centre are refined by matched filtering
    (coordinate ascent on z) integrates the whole particle instead (IoU ~0.8-0.9
    with rods, discs, squares and triangles). The appearance memory then learns
    the true outline over the next frames.
    """
    rows, cols = np.nonzero(mask)
    cov = np.cov(np.stack([cols, rows]).astype(float)) + np.eye(2) / 12
    eigval, eigvec = np.linalg.eigh(cov)
    params = [float(cols.mean()), float(rows.mean()), math.atan2(eigvec[1, 1], eigvec[0, 1]),
              2 * math.sqrt(eigval[1]), 2 * math.sqrt(eigval[0])]  # xc, yc, angle (rad), semi-axes
    reach = int(math.ceil(1.5 * params[3] * max(ELLIPSE_SCALES) + 8))
    r0, r1 = max(int(params[1]) - reach, 0), min(int(params[1]) + reach + 1, mask.shape[0])
    c0, c1 = max(int(params[0]) - reach, 0), min(int(params[0]) + reach + 1, mask.shape[1])
    gy, gx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    support = (gx - params[0]) ** 2 + (gy - params[1]) ** 2 <= reach**2
    if box is not None:
        support &= box[r0:r1, c0:c1]
    gx, gy, values = gx[support], gy[support], darkness[r0:r1, c0:c1][support]

    def radius(p: list[float]) -> np.ndarray:
        c, s_ = math.cos(p[2]), math.sin(p[2])
        u = (gx - p[0]) * c + (gy - p[1]) * s_
        v = (gy - p[1]) * c - (gx - p[0]) * s_
        return np.sqrt((u / p[3]) ** 2 + (v / p[4]) ** 2)

    def z(p: list[float]) -> float:
        inside = np.clip((1.0 - radius(p)) * p[4] + 0.5, 0.0, 1.0)
        inside -= inside.mean()
        return float(inside @ values) / max(float(np.linalg.norm(inside)), 1e-9)

    best = max(([*params[:3], max(params[3] * sa, 1.0), max(params[4] * sb, 1.0)]
                for sa in ELLIPSE_SCALES for sb in ELLIPSE_SCALES), key=z)
    for _ in range(2):
        turns = [[*best[:2], best[2] + math.radians(d), *best[3:]] for d in range(-24, 25, 6)]
        best = max(turns, key=z)
        shifts = [[best[0] + dx, best[1] + dy, *best[2:]] for dx in (-2, -1, 0, 1, 2) for dy in (-2, -1, 0, 1, 2)]
        best = max(shifts, key=z)
        sizes = [[*best[:3], best[3] * sa, best[4] * sb] for sa in (0.93, 1.0, 1.07) for sb in (0.93, 1.0, 1.07)]
        best = max(sizes, key=z)
    ellipse = np.zeros_like(mask)
    gy_all, gx_all = np.mgrid[r0:r1, c0:c1]
    gx, gy = gx_all.astype(np.float32), gy_all.astype(np.float32)
    ellipse[r0:r1, c0:c1] = radius(best) <= 1.0
    return ellipse if ellipse.sum() >= 6 else mask
