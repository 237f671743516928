"""Velocity autocorrelation C_v(tau) from one-step displacement vectors (Eq. 2, on vectors).

Velocities are displacements over ``step`` frames, ``v(t) = r(t + step) - r(t)``,
defined only where both frames t and t + step were measured. Then::

    C_v(tau) = < v(t) . v(t + tau) > / < v(t) . v(t) >

with both averages over every available pair (gap-aware: tau is a true frame
difference). C_v(0) = 1. Reference values: Brownian motion gives 0 for
tau >= step; static localisation noise alone gives -1/2 at tau = step;
fractional Brownian motion with exponent alpha gives 2**(alpha - 1) - 1 at
tau = step = 1. Units cancel (dimensionless); tau in frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.stats.msd import pairs_at_lag, sorted_track

if TYPE_CHECKING:
    from collections.abc import Iterable

Track = tuple[np.ndarray, np.ndarray]  # (frames (N,), positions (N, 2))


@dataclass(frozen=True)
class VelocityAutocorrelation:
    """C_v per lag 0..L (frames); ``n`` = velocity pairs per lag; NaN where none."""

    lag_frames: np.ndarray
    cv: np.ndarray
    n: np.ndarray
    step_frames: int


def step_velocities(frames: np.ndarray, xy: np.ndarray, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(start frames, velocity vectors in px/step) for one sorted track (see `sorted_track`)."""
    i, j = pairs_at_lag(frames, step)
    return frames[i], xy[j] - xy[i]


def velocity_autocorrelation(tracks: Iterable[Track], max_lag: int, step: int = 1) -> VelocityAutocorrelation:
    """C_v(tau) pooled over ``tracks`` (pass one track for a single particle).

    Parameters
    ----------
    tracks : iterable of (frames, xy) with xy (N, 2) in pixels; any order, unique frames.
    max_lag : largest tau in frames.
    step : frames over which a velocity is taken (1 = consecutive frames).
    """
    if max_lag < 0 or step < 1:
        raise ValueError(f"need max_lag >= 0 and step >= 1, got {max_lag}, {step}")
    dots = np.zeros(max_lag + 1)
    counts = np.zeros(max_lag + 1, dtype=np.int64)
    for frames, xy in tracks:
        f, v = sorted_track(frames, xy)
        vt, vel = step_velocities(f, v, step)
        for lag in range(max_lag + 1):
            a, b = pairs_at_lag(vt, lag)
            if a.size:
                dots[lag] += float(np.sum(vel[a] * vel[b]))
                counts[lag] += a.size
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, dots / np.maximum(counts, 1), np.nan)
        cv = mean / mean[0] if counts[0] > 0 and mean[0] > 0 else np.full_like(mean, np.nan)
    return VelocityAutocorrelation(np.arange(max_lag + 1), cv, counts, step)
