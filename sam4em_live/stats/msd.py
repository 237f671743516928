"""Time-averaged mean squared displacement (tMSD), gap-aware, and its ensemble average.

Definitions (Eq. 1 of the SAM4EM paper, done on vectors):

    tMSD(tau) = < |r(t + tau) - r(t)|^2 >_t

averaged over every pair of measured positions whose frame indices differ by
exactly ``tau`` frames. Missing frames produce no pairs; lags are true frame
differences, never array offsets. ``n`` counts the pairs at each lag.

Positions are in pixels (x = column, y = row) and lags in frames; convert with
`sam4em_live.stats.units`. The same pair sums (`lag_pair_sums`) are used by
the batch functions here and by the live `RollingTrackStats`, so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from numpy.typing import ArrayLike


@dataclass(frozen=True)
class TrackMsd:
    """tMSD of one track.

    Attributes
    ----------
    lag_frames : (L,) int64
        Lags 1..L in frames.
    msd : (L,) float64
        Mean squared displacement at each lag, in squared input units
        (px^2 for positions in pixels, deg^2 for angles); NaN where ``n == 0``.
    n : (L,) int64
        Number of position pairs at each lag.
    """

    lag_frames: np.ndarray
    msd: np.ndarray
    n: np.ndarray

    def measured(self) -> TrackMsd:
        """Only the lags with at least one pair."""
        keep = self.n > 0
        return TrackMsd(self.lag_frames[keep], self.msd[keep], self.n[keep])


def sorted_track(frames: Iterable[int], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames as sorted int64 and values (N, D) float64 in the same order.

    Raises ``ValueError`` on duplicate frames (one particle has one position
    per frame) or mismatched lengths.
    """
    frame_arr = np.asarray(frames, dtype=np.int64).ravel()
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals[:, None]
    if vals.shape[0] != frame_arr.size:
        raise ValueError(f"{frame_arr.size} frames but {vals.shape[0]} positions")
    order = np.argsort(frame_arr, kind="stable")
    frame_arr, vals = frame_arr[order], vals[order]
    if frame_arr.size > 1 and np.any(np.diff(frame_arr) == 0):
        dup = frame_arr[1:][np.diff(frame_arr) == 0][0]
        raise ValueError(f"frame {dup} appears more than once in one track")
    return frame_arr, vals


def pairs_at_lag(frames: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) with ``frames[j] - frames[i] == lag`` for sorted unique ``frames``."""
    j = np.searchsorted(frames, frames + lag)
    ok = j < frames.size
    ok[ok] = frames[j[ok]] == frames[ok] + lag
    return np.flatnonzero(ok), j[ok]


def squared_displacements(frames: np.ndarray, values: np.ndarray, max_lag: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (lag, |r_j - r_i|^2 for every pair at that lag) for lags 1..max_lag with pairs."""
    for lag in range(1, max_lag + 1):
        i, j = pairs_at_lag(frames, lag)
        if i.size:
            d = values[j] - values[i]
            yield lag, (d * d).sum(axis=1)


def lag_pair_sums(frames: np.ndarray, values: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of squared displacements and pair count per lag 0..max_lag (index 0 unused).

    ``frames`` sorted unique int64, ``values`` (N, D) float64 (see `sorted_track`).
    """
    sums = np.zeros(max_lag + 1, dtype=np.float64)
    counts = np.zeros(max_lag + 1, dtype=np.int64)
    for lag, sq in squared_displacements(frames, values, max_lag):
        sums[lag] = float(np.sum(sq))
        counts[lag] = sq.size
    return sums, counts


def default_max_lag(frames: np.ndarray) -> int:
    """Largest lag we report by default: a quarter of the track's frame span (at least 1).

    Beyond about a quarter of the span the tMSD averages over few, strongly
    correlated pairs.
    """
    if frames.size < 2:
        return 1
    return max(1, int(frames[-1] - frames[0]) // 4)


def tmsd(frames: Iterable[int], x: Iterable[float], y: Iterable[float] | None = None,
         max_lag: int | None = None) -> TrackMsd:
    """Gap-aware tMSD of one track.

    Parameters
    ----------
    frames : frame index of each position (any order, unique).
    x, y : positions (pixels). Pass ``y=None`` for a 1-D quantity (e.g. an
        unwrapped angle in degrees).
    max_lag : largest lag in frames (default `default_max_lag`).
    """
    x_arr = np.asarray(x, dtype=np.float64).ravel()
    values = x_arr[:, None] if y is None else np.column_stack([x_arr, np.asarray(y, dtype=np.float64).ravel()])
    f, v = sorted_track(frames, values)
    if max_lag is None:
        max_lag = default_max_lag(f)
    if max_lag < 1:
        raise ValueError(f"max_lag must be >= 1, got {max_lag}")
    sums, counts = lag_pair_sums(f, v, max_lag)
    return msd_from_sums(sums, counts)


def msd_from_sums(sums: np.ndarray, counts: np.ndarray) -> TrackMsd:
    """`TrackMsd` from per-lag sums and counts indexed 0..L (index 0 ignored)."""
    n = counts[1:].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        msd = np.where(n > 0, sums[1:] / np.maximum(n, 1), np.nan)
    return TrackMsd(np.arange(1, n.size + 1, dtype=np.int64), msd, n)


def ensemble_msd(tracks: Iterable[TrackMsd], weighting: str = "pairs") -> TrackMsd:
    """Ensemble MSD: per-lag weighted mean of per-track tMSDs.

    ``weighting="pairs"`` weights each track by its pair count ``n`` (every
    displacement pair counts once: the pooled mean). ``weighting="independent"``
    weights by the effective number of statistically independent
    measurements of Qian, Sheetz & Elson, Biophys. J. 60, 910 (1991), Eq. B4,
    computed from each track's number of positions -- the weighting trackpy's
    ``emsd`` uses for gap-free tracks. The returned ``n`` is the total pair count.
    """
    tracks = list(tracks)
    if not tracks:
        raise ValueError("ensemble_msd needs at least one track")
    length = max(t.lag_frames.size for t in tracks)
    num = np.zeros(length)
    den = np.zeros(length)
    pairs = np.zeros(length, dtype=np.int64)
    for t in tracks:
        k = t.lag_frames.size
        if weighting == "pairs":
            w = t.n.astype(np.float64)
        elif weighting == "independent":
            w = independent_measurements(int(t.n[0]) + 1, t.lag_frames) * (t.n > 0)
        else:
            raise ValueError(f"weighting must be 'pairs' or 'independent', got {weighting!r}")
        num[:k] += np.where(t.n > 0, t.msd, 0.0) * w
        den[:k] += w
        pairs[:k] += t.n
    with np.errstate(invalid="ignore", divide="ignore"):
        msd = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return TrackMsd(np.arange(1, length + 1, dtype=np.int64), msd, pairs)


def independent_measurements(n_positions: ArrayLike, lags: ArrayLike) -> np.ndarray:
    """Effective number of independent tMSD measurements at each lag (Qian et al. 1991, Eq. B4).

    For a gap-free track of ``n_positions`` positions (N) and lag m (frames)::

        m <= N/2:  6 m (N - m)^2 / (4 N m^2 - 5 m^3 + 2 N - m)
        m >  N/2:  1 / (1 + ((N - m)^3 + 5 m - 4 (N - m)^2 m - N) / (6 (N - m) m^2))
    """
    n = np.asarray(n_positions, dtype=np.float64)
    m = np.asarray(lags, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        short = 6 * m * (n - m) ** 2 / (4 * n * m**2 - 5 * m**3 + 2 * n - m)
        long = 1 / (1 + ((n - m) ** 3 + 5 * m - 4 * (n - m) ** 2 * m - n) / (6 * (n - m) * m**2))
    return np.where(m > n / 2, long, short)
