"""Orientation over time: unwrapping of axial angles and rotational MSD.

`sam4em_live.measure` reports the major-axis orientation in degrees folded
into (-90, 90]: an axis, so theta and theta + 180 are the same orientation.
Unwrapping removes the 180-degree jumps by choosing, between consecutive
measured frames, the change of smallest magnitude (|change| <= 90 degrees).
That is ambiguous when the particle really turns more than 90 degrees between
two measurements (fast rotation or a long gap); such steps are aliased.
Angles of near-round particles (eccentricity ~ 0) are noise; filter them first.

Rotational MSD: ``<(theta(t + tau) - theta(t))^2>`` of the unwrapped angle in
deg^2 (gap-aware tMSD in one dimension); for in-plane rotational diffusion it
is ``2 D_r tau`` (fit with ``dims=1``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.stats.msd import TrackMsd, sorted_track, tmsd

if TYPE_CHECKING:
    from collections.abc import Iterable

AXIAL_PERIOD_DEG = 180.0


def unwrap_axial_deg(frames: Iterable[int], angle_deg: Iterable[float],
                     period_deg: float = AXIAL_PERIOD_DEG) -> tuple[np.ndarray, np.ndarray]:
    """(sorted frames, unwrapped angle in degrees); NaN angles are dropped first."""
    f, a = sorted_track(frames, np.asarray(angle_deg, dtype=np.float64))
    keep = np.isfinite(a[:, 0])
    f, a = f[keep], a[keep, 0]
    if a.size == 0:
        return f, a
    return f, np.unwrap(a, period=period_deg)


def rotational_msd(frames: Iterable[int], angle_deg: Iterable[float], max_lag: int | None = None) -> TrackMsd:
    """Gap-aware MSD (deg^2) of the unwrapped axial angle; lags in frames."""
    f, theta = unwrap_axial_deg(frames, angle_deg)
    return tmsd(f, theta, None, max_lag=max_lag)
