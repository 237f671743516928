"""The tMSD figure: per-particle tMSD with their fits, the ensemble, an α = 1 guide and the pairs per lag.

Log-log. Data points below, fitted curves above them (zorder), each fit's D ± err and α ± err in the
legend; the lower panel shows N, the displacement pairs behind each tMSD point (few pairs at long lags:
those points are noisy). Lags in frames (bottom) and seconds (top, when the frame rate is known).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from sam4em_live.analysis.plots.axes import FigureUnits, fit_label, lag_axes
from sam4em_live.analysis.plots.log_ticks import apply_log_ticks

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from sam4em_live.analysis.result import AnalysisResult
    from sam4em_live.stats.fit import MsdFit

#: Drawing order: guide < data < ensemble < fits, so the fits stay visible over dense points.
Z_GUIDE, Z_DATA, Z_ENSEMBLE, Z_FIT = 1, 2, 3, 4
#: Above this many particles the legend keeps the ensemble only (stats.csv lists every fit).
MAX_LEGEND_PARTICLES = 8


def _fit_curve(ax: Axes, fit: MsdFit, area: float, **style: object) -> None:
    if not np.isfinite(fit.alpha):
        return
    lag = np.geomspace(fit.lag_min, fit.lag_max, 50)
    model = 4 * fit.D * lag**fit.alpha + fit.offset
    ax.loglog(lag, model * area, **style)


def msd_figure(result: AnalysisResult, units: FigureUnits) -> Figure:
    """Per-particle tMSD on log-log axes with their fits over the fit range, the ensemble and N per lag."""
    fig = Figure(figsize=(7, 6.5), layout="constrained")
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    area = units.length**2
    labelled = len(result.msds) <= MAX_LEGEND_PARTICLES
    for i, (pid, m) in enumerate(result.msds.items()):
        m = m.measured()
        if m.lag_frames.size == 0:
            continue
        colour = f"C{i % 10}"
        fit = result.fits[pid]
        ax.loglog(m.lag_frames, m.msd * area, "o", ms=3, color=colour, alpha=0.6, zorder=Z_DATA,
                  label=f"#{pid}: {fit_label(fit, units)}" if labelled else None)
        _fit_curve(ax, fit, area, color=colour, lw=1.8, zorder=Z_FIT)
        ax_n.loglog(m.lag_frames, m.n, "-", color=colour, lw=1, alpha=0.7, zorder=Z_DATA)
    ens = result.ensemble.measured()
    if ens.lag_frames.size:
        ax.loglog(ens.lag_frames, ens.msd * area, "k-", lw=1.5, alpha=0.8, zorder=Z_ENSEMBLE,
                  label="ensemble (pair-weighted mean)")
        _fit_curve(ax, result.ensemble_fit, area, color="black", lw=2.2, ls="--", zorder=Z_FIT + 1,
                   label=f"ensemble fit: {fit_label(result.ensemble_fit, units)}")
        guide = ens.msd[0] * area * (ens.lag_frames / ens.lag_frames[0])
        ax.loglog(ens.lag_frames, guide, ":", color="grey", lw=1.2, zorder=Z_GUIDE,
                  label="α = 1 guide (∝ τ, through the ensemble's first point)")
        ax_n.loglog(ens.lag_frames, ens.n, "k-", lw=1.5, zorder=Z_ENSEMBLE, label="all particles")
    ax.set_ylabel(f"tMSD ({units.length_label}$^2$)")
    ax.set_title(r"tMSD; fits $4D\tau^\alpha + 4\sigma^2$ over their fit range (± : 1 s.e.)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.85)
    if not labelled:
        ax.text(0.99, 0.02, f"{len(result.msds)} particles: each one's D, α in stats.csv", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="grey")
    ax_n.set_ylabel("N pairs")
    lag_axes(ax_n, units.fps, log=True, top_of=ax)
    ax.tick_params(labelbottom=False)
    for axis in (ax.yaxis, ax_n.yaxis):
        apply_log_ticks(axis)
    return fig
