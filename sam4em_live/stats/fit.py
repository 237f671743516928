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

Weighting and uncertainties: the variance of a tMSD point is taken as
``MSD**2 / N_eff`` with ``N_eff`` the effective number of independent
measurements at that lag (Qian, Sheetz & Elson 1991, Eq. B4, with the track
length estimated as pairs + lag; exact for gap-free tracks), so each point
gets weight ``N_eff / MSD**2``. The raw pair count N would overstate the
information at long lags, where the pairs overlap. Uncertainties are the
square roots of the diagonal of ``(J^T W J)^-1`` with these absolute weights,
scaled up by the reduced chi-square when that exceeds 1 (the data scatter
more than the model allows). Neighbouring tMSD points are correlated, which
least squares ignores; on simulated Brownian tracks the reported errors match
the scatter of repeated fits to within a factor ~1 (10 lags) to ~2 (25 lags)
(tests/test_stats_physics.py), while the reduced-chi-square-scaled errors of a
naive fit would be 5-10 times too small.

The anomalous fit is separable: for fixed alpha the model is linear in
(D, offset), solved in closed form, and alpha alone is optimised (vectorised
coarse and fine grids over ``ALPHA_BOUNDS``, then a parabola through the best
three points). That keeps a fit on ~10 points at a few
hundred microseconds, cheap enough for the live rolling statistics, which also
keep a `FitMemo` of what their repeated fits share.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np

from sam4em_live.stats.msd import independent_measurements

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")

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


#: The smallest MSD a fit reads as data (px^2; see `_weights`).
MSD_RESOLUTION_PX2 = 1e-24


def _nan_fit(model: str, n: int, lags: np.ndarray) -> MsdFit:
    lo = float(lags[0]) if lags.size else math.nan
    hi = float(lags[-1]) if lags.size else math.nan
    return MsdFit(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n, lo, hi, model)


def _select(lags: ArrayLike, msd: ArrayLike, n: ArrayLike, points: int | None, lag_frames: ArrayLike | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lags, lags in frames, MSD, pair counts) of the points fitted, float64."""
    lag = np.asarray(lags, dtype=np.float64)
    frames = lag if lag_frames is None else np.asarray(lag_frames, dtype=np.float64)
    y = np.asarray(msd, dtype=np.float64)
    count = np.asarray(n, dtype=np.float64)
    keep = (count > 0) & np.isfinite(y) & (lag > 0)
    lag, frames, y, count = lag[keep], frames[keep], y[keep], count[keep]
    k = fit_point_count(lag.size) if points is None else min(points, lag.size)
    return lag[:k], frames[:k], y[:k], count[:k]


def _effective_counts(lag_frames: np.ndarray, n: np.ndarray) -> np.ndarray:
    """N_eff per lag (Qian et al. Eq. B4 with track length n + lag; the pair count where undefined)."""
    with np.errstate(all="ignore"):
        n_eff = independent_measurements(n + lag_frames, lag_frames)
    return np.where(np.isfinite(n_eff) & (n_eff > 0), n_eff, n)


class AlphaGrid(NamedTuple):
    """Alphas of a grid and the fit basis ``lag**alpha`` on it, (G, K), with its square."""

    alphas: np.ndarray
    basis: np.ndarray
    basis_squared: np.ndarray


def _alpha_grid(log_lag: np.ndarray, coarse_best: int | None) -> AlphaGrid:
    """The coarse grid over ``ALPHA_BOUNDS``, or the fine grid around coarse point ``coarse_best``."""
    if coarse_best is None:
        alphas = _ALPHA_GRID
    else:
        step = _ALPHA_GRID[1] - _ALPHA_GRID[0]
        alphas = np.linspace(_ALPHA_GRID[coarse_best] - step, _ALPHA_GRID[coarse_best] + step, 41)
        alphas = alphas[(alphas >= ALPHA_BOUNDS[0]) & (alphas <= ALPHA_BOUNDS[1])]
    with np.errstate(all="ignore"):
        basis = np.exp(alphas[:, None] * log_lag[None, :])
    return AlphaGrid(alphas, basis, basis * basis)


class FitMemo:
    """What fits of the same lags and pair counts share, kept for one caller that fits them again and again.

    The live statistics fit each particle's window tMSD on every snapshot; once a window is
    full the lags and pair counts repeat frame after frame, and so do the weights' N_eff
    (`_effective_counts`) and the alpha-grid bases (`_alpha_grid`). The memo holds them,
    keyed by the exact bytes of the float64 inputs, so a fit with a memo is float for float a
    fit without one (tests/test_stats_fast_paths.py). Bounded: each table is emptied when it
    holds ``entries``, and grids are kept only for fits of up to ``max_lags`` lags (a grid
    entry is 2 x 250 x lags floats: at most 8 MiB in all). Not thread-safe: one per owner.
    """

    def __init__(self, entries: int = 64, max_lags: int = 32) -> None:
        self.entries = entries
        self.max_lags = max_lags
        self._n_eff: dict[tuple[bytes, bytes], np.ndarray] = {}
        self._grids: dict[tuple[bytes, int], AlphaGrid] = {}

    def __len__(self) -> int:
        """Entries held in all tables."""
        return len(self._n_eff) + len(self._grids)

    def effective_counts(self, lag_frames: np.ndarray, n: np.ndarray) -> np.ndarray:
        """`_effective_counts` (read-only: it is shared)."""
        key = (lag_frames.tobytes(), n.tobytes())
        found = self._n_eff.get(key)
        if found is None:
            found = _read_only(_effective_counts(lag_frames, n))
            _bounded_put(self._n_eff, key, found, self.entries)
        return found

    def alpha_grid(self, log_lag: np.ndarray, coarse_best: int | None) -> AlphaGrid:
        """`_alpha_grid` (read-only arrays), kept for up to ``max_lags`` lags."""
        key = (log_lag.tobytes(), -1 if coarse_best is None else coarse_best)
        found = self._grids.get(key)
        if found is None:
            found = AlphaGrid(*(_read_only(a) for a in _alpha_grid(log_lag, coarse_best)))
            if log_lag.size <= self.max_lags:
                _bounded_put(self._grids, key, found, self.entries)
        return found


def _bounded_put(table: dict[_Key, _Value], key: _Key, value: _Value, entries: int) -> None:
    """``table[key] = value``, emptying the table first when it holds ``entries``."""
    if len(table) >= entries:
        table.clear()
    table[key] = value


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _weights(lag_frames: np.ndarray, msd: np.ndarray, n: np.ndarray, memo: FitMemo | None) -> np.ndarray | None:
    """Inverse variances ``N_eff / MSD^2`` (see module docstring); None if MSD is all zero."""
    # Positions are float64 pixels (magnitude <= 1e5), so a displacement is resolved to ~1e-11 px and an MSD to
    # ~1e-22 px^2: anything below MSD_RESOLUTION_PX2 is a still particle's zero, not data (and would overflow
    # the normal equations' sums of 1/MSD^2 weights).
    scale = np.where(np.abs(msd) < MSD_RESOLUTION_PX2, 0.0, np.abs(msd))
    if not np.any(scale > 0):
        return None
    floor = 1e-12 * float(scale.max())
    n_eff = _effective_counts(lag_frames, n) if memo is None else memo.effective_counts(lag_frames, n)
    return n_eff / np.maximum(scale, floor) ** 2


class _Weighted(NamedTuple):
    """Fit data with the weighted sums that every solve for it needs (computed once per fit)."""

    y: np.ndarray
    w: np.ndarray
    wy: np.ndarray  # w * y
    sw: float  # sum of w
    sy: float  # sum of w * y
    syy: float  # sum of w * y * y

    @classmethod
    def of(cls, y: np.ndarray, w: np.ndarray) -> _Weighted:
        wy = w * y
        return cls(y, w, wy, w.sum(), wy.sum(), (wy * y).sum())


def _solve_linear(basis: np.ndarray, data: _Weighted, with_offset: bool, basis_squared: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted LSQ of y = a*basis + c for each row of ``basis`` (G, K); returns a, c, rss.

    ``basis_squared`` is ``basis * basis`` when the caller has it already.
    """
    sw, sy, syy = data.sw, data.sy, data.syy
    if basis_squared is None:
        basis_squared = basis * basis
    sb, sbb, sby = basis @ data.w, basis_squared @ data.w, basis @ data.wy
    if not with_offset:
        a = sby / sbb
        return a, np.zeros_like(a), syy - a * sby
    det = sbb * sw - sb * sb
    a = (sby * sw - sb * sy) / det
    c = (sbb * sy - sb * sby) / det
    return a, c, syy - a * sby - c * sy


def _final_solve(basis: np.ndarray, data: _Weighted, with_offset: bool) -> tuple[float, float, float] | None:
    """(a, c, rss) of one basis, or None when the data cannot determine them.

    A still particle's MSD can be (nearly) constant or sit near the float limits: the normal equations are then
    singular or overflow. Such a fit is reported as NaN (no estimate), never as a warning raised inside a
    worker or a number made of infinities.
    """
    with np.errstate(all="ignore"):
        a, c, rss = (float(v[0]) for v in _solve_linear(basis[None, :], data, with_offset))
    if not (math.isfinite(a) and math.isfinite(c) and math.isfinite(rss)):
        return None
    return a, c, rss


def _covariance(jac: np.ndarray, w: np.ndarray, rss: float) -> np.ndarray:
    dof = jac.shape[0] - jac.shape[1]
    if dof <= 0:
        return np.full((jac.shape[1], jac.shape[1]), np.nan)
    try:
        inv = np.linalg.inv(jac.T @ (jac * w[:, None]))
    except np.linalg.LinAlgError:
        return np.full((jac.shape[1], jac.shape[1]), np.nan)
    return inv * max(1.0, rss / dof)


def _rss_on_grid(log_lag: np.ndarray, data: _Weighted, with_offset: bool, memo: FitMemo | None,
                 coarse_best: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, profiled residual per alpha; inf where not finite) on a grid of `_alpha_grid`.

    Call inside ``np.errstate(all="ignore")``: hopeless alphas overflow.
    """
    grid = _alpha_grid(log_lag, coarse_best) if memo is None else memo.alpha_grid(log_lag, coarse_best)
    rss = _solve_linear(grid.basis, data, with_offset, grid.basis_squared)[2]
    return grid.alphas, np.where(np.isfinite(rss), rss, np.inf)


def _best_alpha(log_lag: np.ndarray, data: _Weighted, with_offset: bool, memo: FitMemo | None) -> float:
    """Alpha minimising the profiled residual: coarse grid, fine grid, then a parabola through the best 3."""
    with np.errstate(all="ignore"):
        _, coarse = _rss_on_grid(log_lag, data, with_offset, memo)
        fine_alphas, fine = _rss_on_grid(log_lag, data, with_offset, memo, int(np.argmin(coarse)))
    k = int(np.argmin(fine))
    if 0 < k < fine.size - 1 and np.all(np.isfinite(fine[k - 1 : k + 2])):
        r0, r1, r2 = fine[k - 1 : k + 2]
        curvature = r0 - 2 * r1 + r2
        if curvature > 0:
            h = fine_alphas[1] - fine_alphas[0]
            return float(fine_alphas[k] + 0.5 * h * (r0 - r2) / curvature)
    return float(fine_alphas[k])


def fit_msd(lags: ArrayLike, msd: ArrayLike, n: ArrayLike, dims: int = 2, with_offset: bool = True,
            points: int | None = None, lag_frames: ArrayLike | None = None, memo: FitMemo | None = None) -> MsdFit:
    """Fit ``MSD = 2*dims*D*lag**alpha + offset`` (see module docstring).

    Parameters
    ----------
    lags, msd, n : per-lag arrays (any lag unit > 0); lags with ``n == 0`` or NaN MSD are skipped.
    dims : 2 for positions, 1 for an angle.
    with_offset : fit the localisation offset (needs 4 points) or force it to 0 (needs 3).
    points : number of first measured lags to fit (default `fit_point_count`).
    lag_frames : the lags in frames when ``lags`` are in other units (for the weights).
    memo : a caller's `FitMemo`, for repeated fits of the same lags (the same result, sooner).
    """
    lag, frames, y, cnt = _select(lags, msd, n, points, lag_frames)
    w = _weights(frames, y, cnt, memo) if lag.size >= (4 if with_offset else 3) else None
    return _fit_anomalous(lag, None if w is None else _Weighted.of(y, w), dims, with_offset, memo)


def fit_msd_linear(lags: ArrayLike, msd: ArrayLike, n: ArrayLike, dims: int = 2, with_offset: bool = True,
                   points: int | None = None, lag_frames: ArrayLike | None = None, memo: FitMemo | None = None
                   ) -> MsdFit:
    """Fit the normal-diffusion model ``MSD = 2*dims*D*lag + offset`` (alpha fixed at 1); see `fit_msd`."""
    lag, frames, y, cnt = _select(lags, msd, n, points, lag_frames)
    w = _weights(frames, y, cnt, memo) if lag.size >= (3 if with_offset else 2) else None
    return _fit_linear(lag, None if w is None else _Weighted.of(y, w), dims, with_offset)


def fit_msd_both(lags: ArrayLike, msd: ArrayLike, n: ArrayLike, dims: int = 2, with_offset: bool = True,
                 points: int | None = None, lag_frames: ArrayLike | None = None, memo: FitMemo | None = None
                 ) -> tuple[MsdFit, MsdFit]:
    """``(fit_msd(...), fit_msd_linear(...))`` with the same arguments, selecting and weighting the points once.

    Equal, float for float, to the two calls (the live statistics take both on every snapshot).
    """
    lag, frames, y, cnt = _select(lags, msd, n, points, lag_frames)
    w = _weights(frames, y, cnt, memo) if lag.size >= (3 if with_offset else 2) else None
    data = None if w is None else _Weighted.of(y, w)
    anomalous_data = data if lag.size >= (4 if with_offset else 3) else None
    return _fit_anomalous(lag, anomalous_data, dims, with_offset, memo), _fit_linear(lag, data, dims, with_offset)


def _fit_anomalous(lag: np.ndarray, data: _Weighted | None, dims: int, with_offset: bool,
                   memo: FitMemo | None) -> MsdFit:
    if data is None:
        return _nan_fit("anomalous", int(lag.size), lag)
    w = data.w
    log_lag = np.log(lag)
    alpha = _best_alpha(log_lag, data, with_offset, memo)
    basis = np.exp(alpha * log_lag)
    solved = _final_solve(basis, data, with_offset)
    if solved is None:
        return _nan_fit("anomalous", int(lag.size), lag)
    a, c, rss = solved
    scale = 2.0 * dims
    cols = [basis * scale, a * basis * log_lag] + ([np.ones_like(lag)] if with_offset else [])
    cov = _covariance(np.column_stack(cols), w, rss)
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return MsdFit(a / scale, float(err[0]), alpha, float(err[1]), c,
                  float(err[2]) if with_offset else 0.0, int(lag.size), float(lag[0]), float(lag[-1]),
                  "anomalous", float(cov[0, 1]))


def _fit_linear(lag: np.ndarray, data: _Weighted | None, dims: int, with_offset: bool) -> MsdFit:
    if data is None:
        return _nan_fit("linear", int(lag.size), lag)
    w = data.w
    solved = _final_solve(lag, data, with_offset)
    if solved is None:
        return _nan_fit("linear", int(lag.size), lag)
    a, c, rss = solved
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
