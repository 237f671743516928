"""What `analyze` computes for one trajectory source: the record that `figures` draws and the writers save."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sam4em_live.analysis.time_axis import TimeAxis

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from sam4em_live.frames import Calibration
    from sam4em_live.stats.displacements import DisplacementDistribution
    from sam4em_live.stats.fit import MsdFit
    from sam4em_live.stats.msd import TrackMsd
    from sam4em_live.stats.velocity import VelocityAutocorrelation


@dataclass
class AnalysisResult:
    """Everything `analyze` computed (units: px, frames; see ``calibration`` for nm and s)."""

    source: str
    calibration: Calibration
    table: pd.DataFrame
    summary: pd.DataFrame
    msds: dict[int, TrackMsd]
    fits: dict[int, MsdFit]
    ensemble: TrackMsd
    ensemble_fit: MsdFit
    ensemble_fit_linear: MsdFit
    velocity: VelocityAutocorrelation
    distributions: list[DisplacementDistribution]
    warnings: tuple[str, ...] = ()
    files: list[Path] = field(default_factory=list)
    time_axis: TimeAxis = field(default_factory=lambda: TimeAxis(None, "nothing"))  # the frame rate and its origin
