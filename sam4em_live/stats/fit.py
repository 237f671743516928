"""Fits of D and alpha to an MSD curve, with a localisation offset and uncertainties.

Model (``dims`` = 2 for positions, 1 for an angle)::

    MSD(tau) = 2 * dims * D * tau**alpha + offset

``offset`` is ``2 * dims * sigma_loc**2`` for static localisation noise; it is
left free in sign because motion blur during the exposure lowers it (it can
be negative). Units: D is in MSD units per lag unit**alpha (px^2/frame^alpha
for lags in frames, nm^2/s^alpha for lags in seconds).

Fit range: the first ``fit_point_count(L)`` measured lags (10 % of them, at
least 4): short lags carry the most independent information and the
least finite-track bias.

Weighting: the standard error of a tMSD point grows like MSD/sqrt(N), so each
point gets weight ``N / MSD**2``. Uncertainties are the square roots of the
diagonal of the weighted-least-squares covariance ``s^2 (J^T W J)^-1`` with
``s^2`` the reduced chi-square (weights are relative, as in
``scipy.optimize.curve_fit(absolute_sigma=False)``).

The anomalous fit is separable: for fixed alpha the model is linear in
(D, offset), solved in closed form, and alpha alone is optimised (a vectorised
grid then a bounded Brent search). That keeps a fit on ~10 points at a few
hundred microseconds, cheap enough for the live rolling statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar

ALPHA_BOUNDS: tuple[float, float] = (0.02, 2.5)
_ALPHA_GRID = np.linspace(*ALPHA_BOUNDS, 250)


@dataclass(frozen=True)
class MsdFit:
    """Result of `fit_msd` (NaN where not determinable)."""

    D: float
    D_err: float
    alpha: float
    alpha_err: float
    offset: float
    offset_err: float
    n_points: int
    lag_min: float
    lag_max: float
    model: str  # "anomalous" or "linear"
    cov_D_alpha: float = 0.0  # covariance of D and alpha (for unit conversion)

    def as_dict(self) -> dict[str, float | int | str | None]:
        """JSON-able dict: NaN becomes None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def fit_point_count(n_lags: int, fraction: float = 0.1, min_points: int = 4) -> int:
    """How many of the first measured lags the fit uses (documented default range)."""
    return min(n_lags, max(min_points, math.ceil(fraction * n_lags)))


def _nan_fit(model: str, n: int, lags: np.ndarray) -> MsdFit:
    lo = float(lags[0]) if lags.size else math.nan
    hi = float(lags[-1]) if lags.size else math.nan
    return MsdFit(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n, lo, hi, model)


def _select(lags, msd, n, points: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lags = np.asarray(lags, dtype=np.float64)
    msd = np.asarray(msd, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    keep = (n > 0) & np.isfinite(msd) & (lags > 0)
    lags, msd, n = lags[keep], msd[keep], n[keep]
    k = fit_point_count(lags.size) if points is None else min(points, lags.size)
    return lags[:k], msd[:k], n[:k]


def _weights(msd: np.ndarray, n: np.ndarray) -> np.ndarray | None:
    scale = np.abs(msd)
    if not np.any(scale > 0):
        return None
    floor = 1e-12 * float(scale.max())
    return n / np.maximum(scale, floor) ** 2


def _solve_linear(basis: np.ndarray, y: np.ndarray, w: np.ndarray, with_offset: bool):
    """Weighted LSQ of y = a*basis + c for each row of ``basis`` (G, K); returns a, c, rss."""
    sw, sy = w.sum(), (w * y).sum()
    sb, sbb, sby = basis @ w, (basis * basis) @ w, basis @ (w * y)
    syy = (w * y * y).sum()
    if not with_offset:
        a = sby / sbb
        return a, np.zeros_like(a), syy - a * sby
    det = sbb * sw - sb * sb
    a = (sby * sw - sb * sy) / det
    c = (sbb * sy - sb * sby) / det
    return a, c, syy - a * sby - c * sy


def _covariance(jac: np.ndarray, w: np.ndarray, rss: float) -> np.ndarray:
    dof = jac.shape[0] - jac.shape[1]
    if dof <= 0:
        return np.full((jac.shape[1], jac.shape[1]), np.nan)
    try:
        inv = np.linalg.inv(jac.T @ (jac * w[:, None]))
    except np.linalg.LinAlgError:
        return np.full((jac.shape[1], jac.shape[1]), np.nan)
    return inv * (max(rss, 0.0) / dof)


def fit_msd(lags, msd, n, dims: int = 2, with_offset: bool = True, points: int | None = None) -> MsdFit:
    """Fit ``MSD = 2*dims*D*lag**alpha + offset`` (see module docstring).

    Parameters
    ----------
    lags, msd, n : per-lag arrays (any lag unit > 0); lags with ``n == 0`` or NaN MSD are skipped.
    dims : 2 for positions, 1 for an angle.
    with_offset : fit the localisation offset (needs 4 points) or force it to 0 (needs 3).
    points : number of first measured lags to fit (default `fit_point_count`).
    """
    lag, y, cnt = _select(lags, msd, n, points)
    need = 4 if with_offset else 3
    w = _weights(y, cnt) if lag.size >= need else None
    if w is None:
        return _nan_fit("anomalous", int(lag.size), lag)
    log_lag = np.log(lag)

    def rss_at(alpha: float) -> float:
        basis = np.exp(alpha * log_lag)[None, :]
        return float(_solve_linear(basis, y, w, with_offset)[2][0])

    with np.errstate(all="ignore"):
        grid_rss = _solve_linear(np.exp(_ALPHA_GRID[:, None] * log_lag[None, :]), y, w, with_offset)[2]
    grid_rss = np.where(np.isfinite(grid_rss), grid_rss, np.inf)
    best = int(np.argmin(grid_rss))
    step = _ALPHA_GRID[1] - _ALPHA_GRID[0]
    lo, hi = max(ALPHA_BOUNDS[0], _ALPHA_GRID[best] - step), min(ALPHA_BOUNDS[1], _ALPHA_GRID[best] + step)
    alpha = float(minimize_scalar(rss_at, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7}).x)
    basis = np.exp(alpha * log_lag)
    a, c, rss = (float(v[0]) for v in _solve_linear(basis[None, :], y, w, with_offset))
    scale = 2.0 * dims
    cols = [basis * scale, a * basis * log_lag] + ([np.ones_like(lag)] if with_offset else [])
    cov = _covariance(np.column_stack(cols), w, rss)
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return MsdFit(a / scale, float(err[0]), alpha, float(err[1]), c,
                  float(err[2]) if with_offset else 0.0, int(lag.size), float(lag[0]), float(lag[-1]),
                  "anomalous", float(cov[0, 1]))


def fit_msd_linear(lags, msd, n, dims: int = 2, with_offset: bool = True, points: int | None = None) -> MsdFit:
    """Fit the normal-diffusion model ``MSD = 2*dims*D*lag + offset`` (alpha fixed at 1)."""
    lag, y, cnt = _select(lags, msd, n, points)
    need = 3 if with_offset else 2
    w = _weights(y, cnt) if lag.size >= need else None
    if w is None:
        return _nan_fit("linear", int(lag.size), lag)
    a, c, rss = (float(v[0]) for v in _solve_linear(lag[None, :], y, w, with_offset))
    scale = 2.0 * dims
    cols = [lag * scale] + ([np.ones_like(lag)] if with_offset else [])
    cov = _covariance(np.column_stack(cols), w, rss)
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return MsdFit(a / scale, float(err[0]), 1.0, 0.0, c, float(err[1]) if with_offset else 0.0,
                  int(lag.size), float(lag[0]), float(lag[-1]), "linear")


def to_physical(fit: MsdFit, pixel_size_nm: float, fps: float) -> tuple[float, float]:
    """(D, D_err) of a fit done in px^2 and frames, converted to nm^2 / s^alpha.

    ``D_phys = D * pixel_size_nm**2 * fps**alpha``; the error propagates the
    full (D, alpha) covariance of the fit.
    """
    factor = pixel_size_nm**2 * fps**fit.alpha
    d_phys = fit.D * factor
    grad_alpha = d_phys * math.log(fps)
    var = (factor * fit.D_err) ** 2 + (grad_alpha * fit.alpha_err) ** 2 + 2 * factor * grad_alpha * fit.cov_D_alpha
    return d_phys, math.sqrt(max(var, 0.0))
