"""Figures of the displacement distributions and of the velocity autocorrelation C_v.

Points carry their counting error (Poisson: √k per bin) or the pair counts per lag; reference curves
(Gaussian, Rayleigh, the C_v values of Brownian motion and of localisation noise) are drawn above the
data and say what they are. Lags in frames and, with a frame rate, seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from sam4em_live.analysis.plots.axes import FigureUnits, format_pm, lag_axes
from sam4em_live.analysis.plots.log_ticks import apply_log_ticks

if TYPE_CHECKING:
    from sam4em_live.analysis.result import AnalysisResult

Z_GUIDE, Z_DATA, Z_REFERENCE = 1, 2, 4


def _lag_text(lag_frames: int, units: FigureUnits) -> str:
    frames = f"{lag_frames} frame{'s' if lag_frames != 1 else ''}"
    return f"{frames} ({lag_frames / units.fps:.3g} s)" if units.fps else frames


def displacement_figure(result: AnalysisResult, units: FigureUnits) -> Figure:
    """PDFs of Δx, Δy (with the Gaussian of equal variance) and |Δr| (with the Rayleigh) per lag.

    Error bars: Poisson counting errors of each bin; κ: excess kurtosis ± its jackknife standard error.
    """
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax_xy, ax_r = fig.subplots(1, 2)
    scale = units.length
    lowest = np.inf
    for i, d in enumerate(result.distributions):
        colour = f"C{i % 10}"
        lag = _lag_text(d.lag_frames, units)
        x = d.centers_xy * scale
        for pdf, marker, name, kappa, kappa_err in ((d.pdf_dx, "o", "Δx", d.kurtosis_dx, d.kurtosis_dx_err),
                                                    (d.pdf_dy, "s", "Δy", d.kurtosis_dy, d.kurtosis_dy_err)):
            seen = pdf > 0  # empty bins have no place on a log axis
            err = d.density_err(pdf, d.centers_xy)[seen]
            # a bin of one count has an error as large as itself: its bar stops at a tenth of the value
            # instead of running to zero (minus infinity on a log axis)
            low = np.minimum(err, 0.9 * pdf[seen])
            lowest = min(lowest, float(np.min(pdf[seen])) / scale)
            ax_xy.errorbar(x[seen], pdf[seen] / scale, yerr=np.vstack([low, err]) / scale, fmt=marker, ms=3,
                           color=colour,
                           mfc=colour if name == "Δx" else "none", elinewidth=0.7, capsize=0, zorder=Z_DATA,
                           label=f"{name}, lag {lag}: κ = {format_pm(kappa, kappa_err)}")
        ax_xy.semilogy(x, d.gauss_dx / scale, "-", color=colour, lw=1.3, zorder=Z_REFERENCE)
        r = d.centers_r * scale
        err_r = d.density_err(d.pdf_r, d.centers_r)
        ax_r.errorbar(r, d.pdf_r / scale, yerr=err_r / scale, fmt="o", ms=3, color=colour, elinewidth=0.7,
                      capsize=0, zorder=Z_DATA, label=f"|Δr|, lag {lag}: N = {d.count}")
        ax_r.plot(r, d.rayleigh_r / scale, "-", color=colour, lw=1.3, zorder=Z_REFERENCE)
    ax_xy.set_yscale("log")
    if np.isfinite(lowest):
        ax_xy.set_ylim(bottom=0.05 * lowest)
    apply_log_ticks(ax_xy.yaxis)
    ax_xy.set_xlabel(f"displacement ({units.length_label})")
    ax_xy.set_ylabel(f"PDF (1/{units.length_label})")
    ax_xy.set_title("Δx, Δy; lines: Gaussian of equal variance\n"
                    "κ: excess kurtosis m₄/m₂² − 3 (0 if Gaussian) ± jackknife s.e.; bars: √counts (≥ value/10)",
                    fontsize=9)
    ax_r.set_xlabel(f"|Δr| ({units.length_label})")
    ax_r.set_ylabel(f"PDF (1/{units.length_label})")
    ax_r.set_title("|Δr|; lines: 2-D Gaussian (Rayleigh) of equal ⟨Δr²⟩\nbars: √counts; N: displacements",
                   fontsize=9)
    for ax in (ax_xy, ax_r):
        if result.distributions:
            ax.legend(fontsize=7)
    return fig


def velocity_figure(result: AnalysisResult, units: FigureUnits) -> Figure:
    """Ensemble C_v(τ) with its pairs per lag and the Brownian (0) and noise-limited (−½) references."""
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    cv = result.velocity
    ok = cv.n > 0
    step = cv.step_frames
    ax.axhline(0.0, color="grey", lw=1, zorder=Z_GUIDE, label="0: Brownian motion (every τ ≥ δ)")
    ax.axhline(-0.5, color="grey", lw=1, ls="--", zorder=Z_GUIDE,
               label=f"−½: localisation noise alone, at τ = δ = {step} frame\n"
                     r"   ($C_v(\delta) = -\sigma^2/(2D\delta + 2\sigma^2)$, → −½ when noise σ dominates)")
    ax.plot(cv.lag_frames[ok], cv.cv[ok], "o-", color="C0", ms=4, zorder=Z_DATA, label=r"$C_v(\tau)$, all particles")
    ax.set_ylabel(r"$C_v(\tau) = \langle v(t)\cdot v(t+\tau)\rangle / \langle v^2\rangle$")
    ax.set_title(f"Velocity autocorrelation, v = r(t + δ) − r(t), δ = {step} frame", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    ax_n.bar(cv.lag_frames[ok], cv.n[ok], width=0.6, color="C0", alpha=0.6)
    ax_n.set_ylabel("N pairs")
    lag_axes(ax_n, units.fps, log=False, top_of=ax)
    ax.tick_params(labelbottom=False)
    return fig
