"""The detector's flat field: the frame's relative deviation from a wide, smooth background.

Gradients, vignettes and dose steps divide out; what is left is relative contrast, the same at every dose.
The background is a polynomial surface times a Gaussian-smoothed residual on a coarse grid (a wide kernel at
full size costs ~100x more), computed twice: the second time without what stood out the first (normalized
convolution), so a large particle does not pull its own background towards it. Units: cells of the block
mean (``factor`` full-resolution pixels a side) unless named ``_px``.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.morphology import dilate_cross
from sam4em_live.segment.embedded.window import block_mean, float32_median

#: Cells above this many noise sigmas in the first pass are left out of the second pass's background.
OBJECT_SIGMA = 2.5
#: Order of the polynomial surface under the background (4: a vignette's corners, not only a ramp).
SURFACE_ORDER = 4
#: The background is fitted and smoothed on a grid of about this many coarse cells a side.
COARSE_CELLS = 48


def flat_field(low: np.ndarray, factor: int, background_sigma_px: float, matched_sigma_px: float) -> np.ndarray:
    """Relative deviation from a wide background: gradients, vignettes and dose steps divide out."""
    sigma_cells = background_sigma_px / factor
    relative = _relative(low, _wide_background(low, sigma_cells))
    # second pass without what stood out in the first: the particles' own cells are filled from around them
    smooth = ndimage.gaussian_filter(relative, max(matched_sigma_px / factor, 0.7), mode="nearest")
    noise = robust_sigma(smooth, max(4 * matched_sigma_px / factor, 3.0))
    if noise <= 0:
        return relative
    objects = _inner(dilate_cross(np.abs(smooth) > OBJECT_SIGMA * noise, 2))
    return _relative(low, _wide_background(low, sigma_cells, (~objects).astype(np.float32)))


def _wide_background(low: np.ndarray, sigma_cells: float, weights: np.ndarray | None = None) -> np.ndarray:
    """A Gaussian of ``sigma_cells`` at a coarser scale (a wide kernel at full size costs ~100x more), resized back.

    With ``weights`` (1 = background, 0 = a particle) it is a normalized convolution: the particles' cells
    are filled from their surroundings, so a large particle does not pull its own background towards it.
    """
    step = max(1, round(max(low.shape) / COARSE_CELLS))
    rows, cols = low.shape
    coarse_rows, coarse_cols = -(-rows // step), -(-cols // step)
    pad = (coarse_rows * step - rows, coarse_cols * step - cols)
    sigma = sigma_cells / step
    w = np.ones((coarse_rows, coarse_cols), np.float32) if weights is None else block_mean(
        _edge_padded(weights, *pad), step)
    values = block_mean(_edge_padded(low if weights is None else low * weights, *pad), step)
    values /= np.maximum(w, np.float32(1e-3))
    # A Gaussian reflected at the border flattens a ramp there (bias ~ slope x sigma): smooth only what a
    # quadratic surface leaves, so gradients and vignettes reach the border intact.
    surface = _quadratic_surface(values, w)
    ratio = values / np.maximum(surface, np.float32(1e-6))
    coarse = ndimage.gaussian_filter(ratio * w, sigma, mode="reflect")
    coarse /= np.maximum(ndimage.gaussian_filter(w, sigma, mode="reflect"), np.float32(1e-3))
    coarse *= surface
    # back to cells: linear interpolation between coarse-cell centres, one axis at a time (ndimage.zoom: ~10x slower)
    coarse = _edge_padded(coarse, 1, 1)  # so that the last cells have a right neighbour
    left, frac = _interpolation(rows, coarse_rows, step)
    half = coarse[left] * (1 - frac)[:, None] + coarse[left + 1] * frac[:, None]
    left, frac = _interpolation(cols, coarse_cols, step)
    return half[:, left] * (1 - frac) + half[:, left + 1] * frac


def _edge_padded(image: np.ndarray, rows_after: int, cols_after: int) -> np.ndarray:
    """``np.pad(image, ((0, rows_after), (0, cols_after)), mode="edge")`` without its generic machinery (~10x)."""
    if rows_after == 0 and cols_after == 0:
        return image
    rows, cols = image.shape
    out = np.empty((rows + rows_after, cols + cols_after), image.dtype)
    out[:rows, :cols] = image
    out[rows:, :cols] = image[-1:]
    out[:, cols:] = out[:, cols - 1 : cols]
    return out


def _quadratic_surface(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares polynomial surface (`SURFACE_ORDER`) through a (small, coarse) image."""
    rows, cols = values.shape
    py, px = _powers(rows), _powers(cols)
    low_py, low_px = py[:, : SURFACE_ORDER + 1], px[:, : SURFACE_ORDER + 1]
    # Normal equations from separable moments: every sum of w·x^i·y^j over the grid is one entry of
    # Y^T W X, a product of (9 x 43) (43 x 43) (43 x 9) matrices, ~15x cheaper than summing over the
    # (cells x terms) basis; no large product either (a multi-threaded BLAS on a busy machine took ~200 ms
    # for an lstsq of this fit, measured).
    w = np.clip(weights, 0, None).astype(np.float64)
    moments = py.T @ w @ px  # [q, p]: sum of w y^q x^p
    first = low_py.T @ (w * values.astype(np.float64)) @ low_px  # [j, i]: sum of w v y^j x^i
    xi, yj = _SURFACE_TERMS
    gram = moments[yj[:, None] + yj[None, :], xi[:, None] + xi[None, :]] + np.eye(len(xi)) * 1e-9
    coef = np.linalg.solve(gram, first[yj, xi])
    grid = np.zeros((SURFACE_ORDER + 1, SURFACE_ORDER + 1))
    grid[yj, xi] = coef
    return np.asarray(low_py @ grid @ low_px.T, dtype=np.float32)


#: The surface's monomials x^i y^j with i + j <= `SURFACE_ORDER`: (exponents of x, exponents of y).
_SURFACE_TERMS = (np.array([i for i in range(SURFACE_ORDER + 1) for _ in range(SURFACE_ORDER + 1 - i)]),
                  np.array([j for i in range(SURFACE_ORDER + 1) for j in range(SURFACE_ORDER + 1 - i)]))


@functools.lru_cache(maxsize=16)
def _powers(n: int) -> np.ndarray:
    """(n, 2 * `SURFACE_ORDER` + 1): t^k for n points t spread over [-0.5, 0.5] (rows or columns of the grid)."""
    t = np.arange(n, dtype=np.float64) / max(n - 1, 1) - 0.5
    return np.asarray(t[:, None] ** np.arange(2 * SURFACE_ORDER + 1))


@functools.lru_cache(maxsize=16)
def _interpolation(n: int, n_coarse: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n`` cells: the coarse cell left of it (centres at i*step + (step-1)/2) and the weight of the next."""
    pos = np.clip((np.arange(n, dtype=np.float32) - (step - 1) / 2) / step, 0, n_coarse - 1)
    left = np.floor(pos).astype(np.intp)  # the coarse image is padded by one: left + 1 is always there
    return left, (pos - left).astype(np.float32)


def _inner(objects: np.ndarray) -> np.ndarray:
    """The objects that do not touch the border.

    There, what stands out is mostly the flat field's own error (a vignette's corner), which masking would
    carry on inwards instead of correcting.
    """
    labels, n = ndimage.label(objects)
    touching = np.zeros(n + 1, bool)  # by label (a lookup table: np.isin sorts)
    touching[labels[0]] = touching[labels[-1]] = touching[labels[:, 0]] = touching[labels[:, -1]] = True
    return objects & ~touching[labels]


def _relative(low: np.ndarray, background: np.ndarray) -> np.ndarray:
    np.maximum(background, np.float32(1e-6), out=background)
    relative = low / background
    relative -= np.float32(1.0)
    return relative


def robust_sigma(values: np.ndarray, detrend_cells: float) -> float:
    """Noise level: median absolute deviation of a subsample, minus what varies slower than ``detrend_cells``.

    A vignette the flat field did not follow must not count as noise.
    """
    sub = values[::2, ::2]
    sample = (sub - ndimage.gaussian_filter(sub, detrend_cells / 2, mode="nearest")).ravel()
    sample -= float32_median(sample)
    return 1.4826 * float32_median(np.abs(sample, out=sample))
