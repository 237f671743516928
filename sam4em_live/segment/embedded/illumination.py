"""The smooth part of a frame's background from one frame: a robust fit of its illumination.

Uneven illumination (a ramp, a vignette, the large scales of a sample's texture) and a detector
read out through four ports with slightly different gains are *multiplicative*: they scale
particle and background alike. On the first frame of a stream -- where the prompts are seeded,
before anything can be learned over time -- their product is estimated by a least-squares fit
of the block means to a cubic polynomial in (x, y) times one gain per detector quadrant,
with blocks that do not fit (particles, blobs: anything small) rejected over a few rounds. The
fit's spread says whether the frame has such structure at all (`IlluminationFit.structure`).
What the smooth fit leaves -- a sample's texture at the scales of a few particles -- is estimated
next by `fit_texture`: a robust local mean of the frame divided by the fit, particles rejected and
prompted places held out.

Coordinates: x = column, y = row; the fit works on a grid of blocks (cell centres).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

#: Degree of the polynomial surface (a ramp times a quadratic vignette is cubic).
SURFACE_DEGREE = 3
#: Rounds of outlier rejection, and the rejection threshold in robust sigmas of the residual.
REJECTION_ROUNDS, REJECT_SIGMAS = 8, 2.5
#: The residual spread is taken as at least this (noise-free data would otherwise reject good cells).
MIN_SPREAD = 0.002
#: The fit's own noise is discounted from its structure up to this many of its standard deviations.
NOISE_SIGNIFICANCE = 3.0
#: Fewest cells for a fit (a polynomial of degree 3 and three quadrant steps have 13 terms).
MIN_FIT_CELLS = 40


class IlluminationFit(NamedTuple):
    """A fitted illumination: a polynomial surface times one gain per quadrant, on the fitted cell grid.

    ``structure`` is the standard deviation of the fitted illumination's log over the cells with data, less
    what a fit to the residual noise alone would show (see `fit_illumination`): about its relative rms
    variation (0.01 = 1 %); a flat simulated frame fits to ~0-0.3 %, whatever its dose.
    """

    coefficients: np.ndarray  # of the surface's monomials (`_monomials`)
    gains: tuple[float, float, float, float]  # top-left (1), top-right, bottom-left, bottom-right
    grid: tuple[int, int]  # cells (rows, cols) of the fitted grid
    quadrants: tuple[float, float]  # where the quadrants meet, in cells (rows, cols)
    structure: float

    def relative(self, per_cell: int) -> np.ndarray:
        """The fitted illumination (mean 1) on a grid ``per_cell`` times finer than the fitted one, float32."""
        rows, cols = self.grid[0] * per_cell, self.grid[1] * per_cell
        centre_rows = (np.arange(rows, dtype=np.float64) + 0.5) / per_cell
        centre_cols = (np.arange(cols, dtype=np.float64) + 0.5) / per_cell
        surface = _monomials(centre_rows, centre_cols, self.grid) @ self.coefficients
        out = np.maximum(surface, 1e-6) * _quadrant_index(centre_rows, centre_cols, self.quadrants).choose(self.gains)
        return (out / out.mean()).astype(np.float32)


def fit_illumination(blocks: np.ndarray, quadrant_rows: float, quadrant_cols: float,
                     stop_when_settled: bool = True) -> IlluminationFit | None:
    """Fit the smooth illumination of a grid of block means (> 0 where usable); None if too few cells.

    ``quadrant_rows`` / ``quadrant_cols`` are where the detector's quadrants meet, in cell units
    (the frame's middle row and column divided by the block size). The surface is fitted in
    intensity, not log (a linear ramp times a quadratic vignette is exactly cubic); the quadrant gains
    come from a fit in log, where a gain step is a constant added. Cells that do not fit are dropped.

    ``stop_when_settled``: the rejection rounds end once a round keeps the cells it was given: every
    further round would fit the same cells to the same floats and keep them again, so the fit is the
    one all `REJECTION_ROUNDS` give (False: all of them, the reference; tests). Each round is two
    least-squares fits (~0.4 ms each on the 32 x 32 cells of a 1024² frame): the map's structure test
    ran all 8 rounds every 32 frames, a 5-6 ms frame (issue 23).
    """
    usable = (np.isfinite(blocks) & (blocks > 0)).ravel()
    if usable.sum() < MIN_FIT_CELLS:
        return None
    grid = (int(blocks.shape[0]), int(blocks.shape[1]))
    quadrants = (float(quadrant_rows), float(quadrant_cols))
    centre_rows, centre_cols = np.arange(grid[0]) + 0.5, np.arange(grid[1]) + 0.5
    design = _monomials(centre_rows, centre_cols, grid).reshape(-1, N_MONOMIALS)
    which = _quadrant_index(centre_rows, centre_cols, quadrants).ravel()
    target = np.where(usable, blocks.ravel(), 0.0).astype(np.float64)
    scale = float(np.median(target[usable]))
    target /= scale
    log_target = np.log(np.where(usable, target, 1.0))
    steps = np.stack([which == quadrant for quadrant in (1, 2, 3)], axis=-1).astype(np.float64)
    log_design = np.concatenate([design, steps], axis=1)
    keep, gains = usable.copy(), np.ones(4)
    coef = np.zeros(N_MONOMIALS)
    for _ in range(REJECTION_ROUNDS):
        if keep.sum() < MIN_FIT_CELLS:
            break
        # The gains from a fit in log (where a gain step adds), the surface in intensity (where it is cubic).
        log_coef, *_ = np.linalg.lstsq(log_design[keep], log_target[keep], rcond=None)
        gains[1:] = np.exp(log_coef[N_MONOMIALS:])
        coef, *_ = np.linalg.lstsq(design[keep], target[keep] / gains[which[keep]], rcond=None)
        residual = target / (np.maximum(design @ coef, 1e-6) * gains[which]) - 1.0
        spread = max(1.4826 * float(np.median(np.abs(residual[keep]))), MIN_SPREAD)
        kept, keep = keep, usable & (np.abs(residual) < REJECT_SIGMAS * spread)
        if stop_when_settled and np.array_equal(keep, kept):
            break
    fitted = np.log(np.maximum(design @ coef, 1e-6) * gains[which])
    # A least-squares fit of p terms to n cells of noise sigma has a variance of about sigma^2 p / n by itself
    # (give or take sqrt(2 / p) of it): at a low dose (a CNR of 0.3 on a flat frame: 6-13 % per fitted cell)
    # that alone read as 1.2-2 % "structure" and switched the correction on for a flat frame. The structure
    # is the variance beyond `NOISE_SIGNIFICANCE` times its spread, where there were data (a surface
    # extrapolated into a large held-out hole is no evidence).
    spread = max(1.4826 * float(np.median(np.abs(residual[keep]))), MIN_SPREAD) if keep.any() else MIN_SPREAD
    terms = N_MONOMIALS + 3
    noise_var = spread * spread * terms / max(int(keep.sum()), 1) * (1 + NOISE_SIGNIFICANCE * np.sqrt(2 / terms))
    structure = float(np.sqrt(max(float(fitted[usable].var()) - noise_var, 0.0)))
    return IlluminationFit(coef, (1.0, float(gains[1]), float(gains[2]), float(gains[3])), grid, quadrants,
                           structure)


#: Monomials u^i v^j with i + j <= `SURFACE_DEGREE`.
N_MONOMIALS = (SURFACE_DEGREE + 1) * (SURFACE_DEGREE + 2) // 2


def _monomials(centre_rows: np.ndarray, centre_cols: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The surface's terms at cell centres (in cells of ``grid``), u and v running -1 .. 1 across the frame."""
    u = 2.0 * centre_cols[None, :] / grid[1] - 1.0
    v = 2.0 * centre_rows[:, None] / grid[0] - 1.0
    shape = (centre_rows.size, centre_cols.size)
    terms = [np.broadcast_to(u**i * v**j, shape) for i in range(SURFACE_DEGREE + 1)
             for j in range(SURFACE_DEGREE + 1 - i)]
    return np.stack(terms, axis=-1)


def _quadrant_index(centre_rows: np.ndarray, centre_cols: np.ndarray, quadrants: tuple[float, float]) -> np.ndarray:
    """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right, per cell (a 4-port readout: one gain per port)."""
    bottom = (centre_rows[:, None] >= quadrants[0]).astype(np.intp)
    right = (centre_cols[None, :] >= quadrants[1]).astype(np.intp)
    return 2 * bottom + right


#: Scale (in blocks of the map) of the one-frame estimate of the background's finer scales, and the wider
#: scale that fills the areas it cannot see (held out or rejected: particles).
TEXTURE_SIGMA_BLOCKS, FILL_SIGMA_FACTOR = 2.0, 3.0
#: How much the wider estimate counts where the local one has data: a little (it only fills holes).
FILL_WEIGHT = 0.05
#: Rounds of rejection; a block is rejected when its (1-block smoothed) deviation exceeds this many robust
#: sigmas, and the rejected areas grow by this many blocks (a particle's blurred rim).
TEXTURE_ROUNDS, TEXTURE_REJECT_SIGMAS, TEXTURE_GROW_BLOCKS = 4, 2.5, 2


def fit_texture(ratio: np.ndarray, held_out: np.ndarray, stop_when_settled: bool = True) -> np.ndarray:
    """The background's scales finer than the fitted illumination, from one frame: a robust local mean.

    ``ratio`` is the frame's block means divided by its fitted illumination (about 1 on background);
    ``held_out`` marks blocks that must not be read as background (a prompted particle: a faint one sits
    in texture of its own contrast and would not be rejected). The estimate is a normalised Gaussian mean
    of ``ratio`` at `TEXTURE_SIGMA_BLOCKS` over the blocks kept; blocks that stand out of it (particles,
    blobs) are rejected over a few rounds, and what it cannot see is filled from a mean
    `FILL_SIGMA_FACTOR` times wider. Returns the estimate (float64, same shape); ones if too little is kept.
    ``stop_when_settled``: as `fit_illumination`'s (a round that keeps its blocks ends the rounds).
    """
    fixed = ~held_out
    keep = fixed.copy()
    estimate = np.ones(ratio.shape)
    for _ in range(TEXTURE_ROUNDS):
        if keep.sum() < MIN_FIT_CELLS:
            return np.ones(ratio.shape)
        weight = keep.astype(np.float64)
        local = _weighted_mean(ratio, weight, TEXTURE_SIGMA_BLOCKS)
        wide = _weighted_mean(ratio, weight, TEXTURE_SIGMA_BLOCKS * FILL_SIGMA_FACTOR)
        local_weight = ndimage.gaussian_filter(weight, TEXTURE_SIGMA_BLOCKS, mode="nearest")
        estimate = (local * local_weight + FILL_WEIGHT * wide) / (local_weight + FILL_WEIGHT)
        # A particle is a coherent deviation: tested after 1-block smoothing, which the pixel noise is not.
        deviation = ndimage.gaussian_filter(ratio / estimate - 1.0, 1.0, mode="nearest")
        centre = float(np.median(deviation[keep]))
        spread = max(1.4826 * float(np.median(np.abs(deviation[keep] - centre))), MIN_SPREAD)
        kept, keep = keep, np.abs(deviation - centre) < TEXTURE_REJECT_SIGMAS * spread
        keep = ~ndimage.binary_dilation(~keep, iterations=TEXTURE_GROW_BLOCKS) & fixed
        if stop_when_settled and np.array_equal(keep, kept):
            break
    return estimate


def _weighted_mean(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian mean of ``values`` over the blocks with weight (normalised convolution; 1 where none is near).

    The frame's edge blocks are extended outwards ("nearest"): a mean near the edge leans on the edge itself
    (zero padding measured worse near the edge against the true texture: 2.3 % rms against 1.7 %).
    """
    total = ndimage.gaussian_filter(values * weight, sigma, mode="nearest")
    norm = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    return np.where(norm > 1e-6, total / np.maximum(norm, 1e-6), 1.0)
