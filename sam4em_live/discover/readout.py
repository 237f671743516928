"""The camera's own pattern in a frame: the gain steps between the readout quadrants of a 4-port detector.

A detector read out through four amplifiers, one per quadrant, has a slightly different gain in each (a few
per cent: the foreign-noise condition of the robustness benchmark uses 0.97 / 1.02 / 1.00 / 1.04). A step
of a few per cent is a particle's contrast: the detector's wide flat field cannot follow it, and the bright
side of the step stood out as a bright "particle" a few cells from the midline (its place wandering along
it with the texture: the only false positives left in that condition). So the steps are measured on the
frame itself, across the two midlines, and divided out before the flat field — only where they stand out
from the noise of their own measurement, so a frame without them is left exactly as it is.

Coordinates: cells of the detector's block-mean image; the midlines are those of the full frame.
"""

from __future__ import annotations

import math

import numpy as np

#: Cells on each side of a midline that measure the step; as many again further out measure the slope
#: of the background there (a gradient across the midline is not a step).
STEP_CELLS = 2
#: A step is corrected only beyond this (relative) and beyond `STEP_SIGMAS` times its standard error.
MIN_STEP = 0.005
STEP_SIGMAS = 4.0


def quadrant_gains(low: np.ndarray, full_shape: tuple[int, int], factor: int) -> np.ndarray | None:
    """Relative gain of each cell's quadrant (mean 1), or None when no step between quadrants stands out.

    ``low``: the block mean of the frame (``factor`` x ``factor`` pixels a cell); ``full_shape``: the frame's
    (rows, columns), whose halves are the quadrants. None too when a midline falls inside a cell.
    """
    mid_row, mid_col = full_shape[0] / 2 / factor, full_shape[1] / 2 / factor
    rows, cols = low.shape
    k = STEP_CELLS
    if mid_row != int(mid_row) or mid_col != int(mid_col) or not (2 * k <= mid_row <= rows - 2 * k
                                                                  and 2 * k <= mid_col <= cols - 2 * k):
        return None
    r2, c2 = int(mid_row), int(mid_col)
    # log-steps across the vertical midline (top half, bottom half) and the horizontal one (left, right half)
    across_columns = _log(low[:, c2 - 2 * k : c2 + 2 * k])
    across_rows = _log(low[r2 - 2 * k : r2 + 2 * k, :]).T
    steps = [_step(across_columns[:r2]), _step(across_columns[r2:]), _step(across_rows[:c2]), _step(across_rows[c2:])]
    if not any(abs(step) > max(MIN_STEP, STEP_SIGMAS * error) for step, error in steps):
        return None
    # log-gains of top-right, bottom-left, bottom-right against top-left, by least squares over the four steps:
    # top = TR - TL, bottom = BR - BL, left = BL - TL, right = BR - TR
    design = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    measured = np.array([step for step, _ in steps])
    tr, bl, br = np.linalg.solve(design.T @ design, design.T @ measured)
    logs = np.array([0.0, tr, bl, br])
    gain = np.exp(logs - logs.mean())
    out = np.empty(low.shape, np.float32)
    out[:r2, :c2], out[:r2, c2:], out[r2:, :c2], out[r2:, c2:] = gain
    return out


def _log(cells: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(cells, np.float32(1e-6)))


def _step(strip: np.ndarray) -> tuple[float, float]:
    """The log-step across the middle of ``strip`` (lines x 4k cells): its median over lines, its standard error.

    The midline lies after the first 2k cells. Per line: the mean of the k cells after the midline minus the k before, less what the background's slope
    (from the k cells further out on each side) accounts for over that distance.
    """
    k = STEP_CELLS
    far_before, before = strip[:, :k].mean(axis=1), strip[:, k : 2 * k].mean(axis=1)
    after, far_after = strip[:, 2 * k : 3 * k].mean(axis=1), strip[:, 3 * k :].mean(axis=1)
    slope = ((before - far_before) + (far_after - after)) / 2  # per k cells
    per_line = (after - before) - slope
    median = float(np.median(per_line))
    spread = 1.4826 * float(np.median(np.abs(per_line - median)))
    return median, 1.2533 * spread / math.sqrt(max(len(per_line), 1))  # the median's standard error
