"""Statistics of trajectories: pure functions shared by the live service and offline analysis.

See docs/statistics.md for definitions, units and fit conventions.
"""

from sam4em_live.stats.fit import MsdFit, fit_msd, fit_msd_linear, fit_point_count, to_physical
from sam4em_live.stats.msd import TrackMsd, ensemble_msd, lag_pair_sums, tmsd
from sam4em_live.stats.rolling import RollingTrackStats

__all__ = [
    "MsdFit", "RollingTrackStats", "TrackMsd", "ensemble_msd", "fit_msd", "fit_msd_linear",
    "fit_point_count", "lag_pair_sums", "tmsd", "to_physical",
]
