"""Displacement distributions at chosen lags, their Gaussian reference and excess kurtosis.

For lag tau (frames) the displacements are ``dx, dy = r(t + tau) - r(t)`` over
every gap-aware pair of one or many tracks (pixels). Brownian motion gives
Gaussian dx, dy (excess kurtosis 0) and a Rayleigh-distributed |dr|.
The reference curves have equal moments: for dx and dy the Gaussian with the
sample mean and variance; for |dr| the Rayleigh distribution of an isotropic
2-D Gaussian with the same <|dr|^2> (scale^2 = <|dr|^2> / 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.stats.msd import pairs_at_lag, sorted_track

if TYPE_CHECKING:
    from collections.abc import Iterable

Track = tuple[np.ndarray, np.ndarray]  # (frames (N,), positions (N, 2))


def displacements(tracks: Iterable[Track], lag: int) -> np.ndarray:
    """(M, 2) displacement vectors (px) at ``lag`` frames, pooled over ``tracks``."""
    if lag < 1:
        raise ValueError(f"lag must be >= 1, got {lag}")
    parts = []
    for frames, xy in tracks:
        f, v = sorted_track(frames, xy)
        i, j = pairs_at_lag(f, lag)
        parts.append(v[j] - v[i])
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def excess_kurtosis(values: np.ndarray) -> float:
    """Fisher excess kurtosis m4 / m2^2 - 3 (0 for a Gaussian); NaN for fewer than 4 values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 4:
        return float("nan")
    d = v - v.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d**4) / m2**2 - 3.0) if m2 > 0 else float("nan")


def excess_kurtosis_err(values: np.ndarray, block: int = 1) -> float:
    """Standard error of `excess_kurtosis` by the delete-a-block jackknife; NaN for fewer than 4 blocks.

    Blocks are ``block`` consecutive values: displacements at lag L from one track overlap in time
    and are correlated over about L of them, so blocks of 2L keep the error near the true spread
    (block = 1 treats the values as independent). Any distribution: no Gaussian assumption (under
    one, the error would be √(24/n)). On Brownian tracks of 3000 frames it matches the spread of κ
    over 300 repeats within 15 % at lags 1 and 10 (slightly under it).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    b = max(int(block), 1)
    m = v.size // b
    if m < 4:
        return float("nan")
    d = v[: m * b] - v[: m * b].mean()  # centred once: the power sums below stay well conditioned
    powers = np.stack([d**k for k in range(1, 5)])  # (4, n)
    block_sums = powers.reshape(4, m, b).sum(axis=2)  # (4, m)
    left = powers.sum(axis=1)[:, None] - block_sums  # power sums without each block
    count = (m - 1) * b
    r1, r2, r3, r4 = left / count  # raw moments of each leave-one-block-out sample
    m2 = r2 - r1**2
    m4 = r4 - 4 * r1 * r3 + 6 * r1**2 * r2 - 3 * r1**4
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = m4 / m2**2 - 3.0
    if not np.all(np.isfinite(theta)):
        return float("nan")
    return float(np.sqrt((m - 1) / m * np.sum((theta - theta.mean()) ** 2)))


@dataclass(frozen=True)
class DisplacementDistribution:
    """Histograms (probability densities) of dx, dy and |dr| at one lag with references.

    ``centers_xy`` / ``centers_r`` are bin centres (px); ``pdf_*`` densities (1/px).
    """

    lag_frames: int
    count: int
    centers_xy: np.ndarray
    pdf_dx: np.ndarray
    pdf_dy: np.ndarray
    gauss_dx: np.ndarray
    gauss_dy: np.ndarray
    centers_r: np.ndarray
    pdf_r: np.ndarray
    rayleigh_r: np.ndarray
    var_dx: float
    var_dy: float
    mean_r2: float
    kurtosis_dx: float
    kurtosis_dy: float
    kurtosis_xy: float  # of dx and dy pooled
    # jackknife standard errors of the three (`excess_kurtosis_err`, blocks of 2 x ``lag_frames``)
    kurtosis_dx_err: float = float("nan")
    kurtosis_dy_err: float = float("nan")
    kurtosis_xy_err: float = float("nan")

    def density_err(self, pdf: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Poisson standard error of a density ``pdf`` histogrammed on equal bins with ``centers`` (1/px).

        A bin of k counts has density k / (count · width), so its error is √k / (count · width).
        """
        width = float(centers[1] - centers[0]) if centers.size > 1 else 1.0
        return np.sqrt(np.maximum(pdf, 0.0) / (self.count * width))


def _gaussian(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    return np.exp(-((x - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var) if var > 0 else np.full_like(x, np.nan)


def displacement_distribution(disp: np.ndarray, lag: int, bins: int = 41) -> DisplacementDistribution:
    """Distribution of displacement vectors ``disp`` (M, 2) measured at ``lag`` frames."""
    d = np.asarray(disp, dtype=np.float64).reshape(-1, 2)
    if d.shape[0] < 2:
        raise ValueError(f"need at least 2 displacements at lag {lag}, got {d.shape[0]}")
    reach = float(np.max(np.abs(d))) or 1.0
    edges = np.linspace(-reach, reach, bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    r = np.hypot(d[:, 0], d[:, 1])
    edges_r = np.linspace(0.0, float(r.max()) or 1.0, bins + 1)
    centers_r = 0.5 * (edges_r[1:] + edges_r[:-1])
    mean_r2 = float(np.mean(r * r))
    scale2 = mean_r2 / 2
    rayleigh = centers_r / scale2 * np.exp(-centers_r**2 / (2 * scale2)) if scale2 > 0 else np.full_like(centers_r, np.nan)
    var_dx, var_dy = float(np.var(d[:, 0])), float(np.var(d[:, 1]))
    pooled = np.concatenate([d[:, 0] - d[:, 0].mean(), d[:, 1] - d[:, 1].mean()])
    return DisplacementDistribution(
        lag_frames=lag, count=int(d.shape[0]), centers_xy=centers,
        pdf_dx=np.histogram(d[:, 0], edges, density=True)[0],
        pdf_dy=np.histogram(d[:, 1], edges, density=True)[0],
        gauss_dx=_gaussian(centers, float(d[:, 0].mean()), var_dx),
        gauss_dy=_gaussian(centers, float(d[:, 1].mean()), var_dy),
        centers_r=centers_r, pdf_r=np.histogram(r, edges_r, density=True)[0], rayleigh_r=rayleigh,
        var_dx=var_dx, var_dy=var_dy, mean_r2=mean_r2,
        kurtosis_dx=excess_kurtosis(d[:, 0]), kurtosis_dy=excess_kurtosis(d[:, 1]),
        kurtosis_xy=excess_kurtosis(pooled),
        kurtosis_dx_err=excess_kurtosis_err(d[:, 0], 2 * lag),
        kurtosis_dy_err=excess_kurtosis_err(d[:, 1], 2 * lag),
        kurtosis_xy_err=excess_kurtosis_err(pooled, 2 * lag),
    )
