"""`analyze`: the statistics of ``sam4em-live analyze`` as objects (tables and matplotlib figures).

The numbers come from `sam4em_live.analysis.analyze.compute` (tMSD with D/α fits, displacement
distributions, velocity autocorrelation C_v) and the figures from `sam4em_live.analysis.figures`, exactly
as the command computes and draws them; with ``out=`` the same files are written too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sam4em_live.analysis.analyze import DEFAULT_PDF_LAGS, compute, resolve_calibration, write_outputs
from sam4em_live.analysis.loading import load_for_analysis, one_series
from sam4em_live.analysis.time_axis import resolve_time_axis
from sam4em_live.api.run import Run
from sam4em_live.frames import Calibration
from sam4em_live.io.trajectories import Trajectories, normalize_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sam4em_live.analysis.result import AnalysisResult
    from sam4em_live.stats.fit import MsdFit


@dataclass
class Analysis:
    """What `analyze` computed.

    Units: px and frames in the tables' ``_px``/``_frames`` columns, nm and s where the calibration is
    known (``calibration``).

    - ``summary``: one row per particle (D, α with uncertainties, track length...; `stats.table.particle_summary`).
    - ``msd``: every particle's tMSD curve, long format (particle, lag, MSD, N per lag).
    - ``ensemble_fit``: the ensemble tMSD fit (``D``, ``alpha`` and their ``_err``).
    - ``figure(name)``: a matplotlib Figure (``tmsd``, ``displacements``, ``velocity_autocorrelation``,
      ``trajectories``); ``figures`` draws them all.
    - ``result``: the full `AnalysisResult` (per-particle `TrackMsd`, fits, distributions, C_v).
    - ``files``: what was written when ``out=`` was given.
    """

    result: AnalysisResult
    files: list[Path] = field(default_factory=list)
    _figures: dict[str, Figure] = field(default_factory=dict, repr=False)

    @property
    def summary(self) -> pd.DataFrame:
        return self.result.summary

    @property
    def msd(self) -> pd.DataFrame:
        from sam4em_live.stats.table import msd_long_table

        cal = self.result.calibration
        return msd_long_table(self.result.msds, cal.fps, cal.pixel_size_nm)

    @property
    def ensemble_fit(self) -> MsdFit:
        return self.result.ensemble_fit

    @property
    def calibration(self) -> Calibration:
        return self.result.calibration

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.result.warnings

    def figure(self, name: str = "tmsd") -> Figure:
        """The figure ``name`` (drawn once, then kept); shows itself in a notebook cell."""
        if name not in self._figures:
            from sam4em_live.analysis.figures import draw_figure

            self._figures[name] = draw_figure(self.result, name)
        return self._figures[name]

    def __repr__(self) -> str:
        fit = self.result.ensemble_fit
        ensemble = (f"ensemble D = {fit.D:.4g} ± {fit.D_err:.2g} px²/frame^α, α = {fit.alpha:.3f} ± {fit.alpha_err:.3f}"
                    if fit.n_points else "no ensemble fit")
        return (f"Analysis({len(self.summary)} particles from {self.result.source}; {ensemble}; "
                f"{self.result.time_axis.describe()})")

    @property
    def figures(self) -> dict[str, Figure]:
        from sam4em_live.analysis.figures import FIGURE_NAMES

        return {name: self.figure(name) for name in FIGURE_NAMES}


def analyze(
    data: Run | pd.DataFrame | str | Path,
    *,
    fps: float | None = None,
    pixel_size_nm: float | None = None,
    max_lag: int | None = None,
    fit_lags: int | None = None,
    pdf_lags: tuple[int, ...] = DEFAULT_PDF_LAGS,
    out: str | Path | None = None,
    figures: bool = True,
    series: int | None = None,
) -> Analysis:
    """Statistics of trajectories: per-particle and ensemble tMSD with D/α fits, displacement PDFs, C_v.

    Parameters
    ----------
    data
        A `Run` (from `sam4em_live.track`), a trajectories DataFrame (trackpy's columns ``frame``,
        ``particle``, ``x``, ``y`` in px; a trackpy ``linked`` table works as is), or a path:
        run folder, trajectories CSV/Parquet, SAM-EM folder or SAM4EM ``masks.npy``.
    fps, pixel_size_nm
        Calibration; override the run's. Without a frame rate, time is counted in frames.
    max_lag
        Largest lag in frames (default: a quarter of each track's span).
    fit_lags
        Number of first lags fitted (default: 10 % of them, at least 4).
    pdf_lags
        Lags (frames) of the displacement distributions.
    series
        The series to analyse of a run (or table) of several (a camera restart, a new series id): frame
        numbers repeat across series, so they are analysed one at a time; such a run is refused without one.
    out
        If given, write ``stats.csv``, ``stats.json``, ``msd.csv`` (and figures, unless ``figures=False``)
        into this folder, as ``sam4em-live analyze --out`` does.

    Raises ValueError for an empty table or a run too short for the statistics asked (`RunTooShort`,
    naming the frames each needs).
    """
    for name, value in (("fps", fps), ("pixel_size_nm", pixel_size_nm)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value}")
    if isinstance(data, pd.DataFrame):
        loaded = one_series(Trajectories(normalize_table(data), Calibration(), "DataFrame"), series)
        recorded = None
    else:
        found = load_for_analysis(data.folder if isinstance(data, Run) else Path(data), series)
        loaded, recorded = found.trajectories, found.time_base
    axis = resolve_time_axis(loaded, fps, recorded)
    result = compute(loaded, resolve_calibration(loaded, fps, pixel_size_nm, axis), max_lag, fit_lags,
                     tuple(pdf_lags), axis)
    analysis = Analysis(result)
    if out is not None:
        analysis.files = write_outputs(result, Path(out), figures)
    return analysis
