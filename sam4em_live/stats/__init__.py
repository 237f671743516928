"""Statistics of trajectories: pure functions shared by the live service and offline analysis.

Units: positions in px, lags in frames (convert with ``pixel_size_nm`` and
``fps``). See docs/statistics.md for definitions and fit conventions.
"""

from sam4em_live.stats.displacements import DisplacementDistribution, displacement_distribution, displacements
from sam4em_live.stats.fit import MsdFit, fit_msd, fit_msd_linear, fit_point_count, to_physical
from sam4em_live.stats.msd import TrackMsd, ensemble_msd, lag_pair_sums, tmsd
from sam4em_live.stats.rolling import RollingTrackStats
from sam4em_live.stats.rotation import rotational_msd, unwrap_axial_deg
from sam4em_live.stats.velocity import VelocityAutocorrelation, velocity_autocorrelation

__all__ = [
    "DisplacementDistribution", "MsdFit", "RollingTrackStats", "TrackMsd", "VelocityAutocorrelation",
    "displacement_distribution", "displacements", "ensemble_msd", "fit_msd", "fit_msd_linear",
    "fit_point_count", "lag_pair_sums", "rotational_msd", "tmsd", "to_physical", "unwrap_axial_deg",
    "velocity_autocorrelation",
]
