"""The stacked motion prior and sub-cell optimum of N score surfaces (the batched near searches, issue 23).

`batched_search` scores many particles' windows at once; these are the steps it shares between its coarse
and fine stages: `search._prior_penalty` of N priors as one array, the surface values around each member's
optimum, and `search._parabola`'s sub-cell offsets -- each the reference's float operations in the same
order and dtypes, member by member, so the poses are identical to the per-particle search.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.segment.embedded.search import _angle_gap
from sam4em_live.segment.embedded.stacking import stack_columns

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.search import MotionPrior

__all__ = ["inner_cells", "parabola_offsets", "prior_penalties", "surface_neighbours"]


def inner_cells(index: np.ndarray, n: int) -> np.ndarray:
    """Whether each index has a neighbour on both sides in 0 .. n - 1 (a parabola can be fitted there)."""
    return (index > 0) & (index < n - 1)


def parabola_offsets(m: np.ndarray, c: np.ndarray, p: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """`search._parabola` of each member's (m, c, p), 0 where not ``inner``: float64, the same operations.

    The inputs are the float32 (or float64) surface values as float64, as ``tolist`` gives the reference.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # -inf neighbours (outside the prior's radius): not fitted
        denom = m - 2 * c + p
        fitted = inner & np.isfinite(denom) & (denom < 0)
        offset = 0.5 * (m - p) / np.where(fitted, denom, -1.0)
    np.maximum(offset, -0.5, out=offset)
    np.minimum(offset, 0.5, out=offset)
    return np.where(fitted, offset, 0.0)


def surface_neighbours(surface: np.ndarray, members: np.ndarray, k: np.ndarray, r: np.ndarray, c: np.ndarray,
                n_rows: int, n_cols: int) -> np.ndarray:
    """(N, 5): each member's surface at (r, c - 1), (r, c), (r, c + 1), (r - 1, c), (r + 1, c), indices clipped."""
    left, right = np.maximum(c - 1, 0), np.minimum(c + 1, n_cols - 1)
    up, down = np.maximum(r - 1, 0), np.minimum(r + 1, n_rows - 1)
    rows = stack_columns([r, r, r, up, down])
    cols = stack_columns([left, c, right, c, c])
    return surface[members[:, None], k[:, None], rows, cols]


def prior_penalties(grid_x: np.ndarray, grid_y: np.ndarray, angles: np.ndarray, priors: list[MotionPrior],
                    period: float) -> np.ndarray:
    """`search._prior_penalty` of N searches at once: (N, A, rows * cols), or (N, 1, rows * cols) if isotropic.

    ``grid_x`` (N, cols), ``grid_y`` (N, rows), ``angles`` (N, A) float32. The same floats, member by member:
    the same float32 operations, the per-member scalars as float32 columns; the radius cut is applied
    everywhere (the reference skips it only where no grid point lies outside).
    """
    n = len(priors)
    column = np.array  # float32 columns of per-member scalars

    def scalars(values: list[float]) -> np.ndarray:
        return column(values, np.float32).reshape(n, 1)

    dy2 = grid_y - scalars([p.y for p in priors])
    np.square(dy2, out=dy2)
    dx2 = grid_x - scalars([p.x for p in priors])
    np.square(dx2, out=dx2)
    dist2 = dy2[:, :, None] + dx2[:, None, :]
    pos = dist2 * scalars([1.0 / p.step_scale_px**2 for p in priors])[:, :, None]
    np.log1p(pos, out=pos)
    pos *= scalars([p.step_weight for p in priors])[:, :, None]
    radius2 = scalars([p.radius_px**2 if math.isfinite(p.radius_px) else math.inf for p in priors])
    pos[dist2 > radius2[:, :, None]] = np.inf
    pos = pos.reshape(n, 1, -1)
    if period <= 0:
        return pos
    if angles.shape[1] > 4:  # the reference's vectorised float32 expression
        gap = angles - scalars([p.angle_deg - period / 2 for p in priors])
        np.remainder(gap, np.array(period, np.float32), out=gap)
        gap -= np.array(period / 2, np.float32)
        np.abs(gap, out=gap)
        turn = scalars([p.turn_weight / (2 * p.turn_sigma_deg**2) for p in priors]) * np.square(gap)
    else:  # the reference's Python floats, rounded to float32
        turn = np.array([[p.turn_weight / (2 * p.turn_sigma_deg**2) * _angle_gap(a, p.angle_deg, period) ** 2
                          for a in row] for p, row in zip(priors, angles.tolist(), strict=True)], np.float32)
    return turn[:, :, None] + pos
