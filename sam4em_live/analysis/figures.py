"""Figures of an analysis (SAM4EM paper Fig. 1c-d style), drawn from computed results only.

Nothing here computes statistics: every number comes from
`sam4em_live.analysis.result.AnalysisResult`. Figures are built on
``matplotlib.figure.Figure`` directly (no pyplot, no global backend change)
and saved as PNG and PDF. Axes are in nm and s when the calibration is known,
else px and frames; image orientation: y (row) grows downwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from sam4em_live.analysis.result import AnalysisResult

FORMATS: tuple[str, ...] = ("png", "pdf")


class _Units:
    """Scale factors and labels for the figure axes."""

    def __init__(self, pixel_size_nm: float | None, fps: float | None) -> None:
        self.length = pixel_size_nm or 1.0
        self.length_label = "nm" if pixel_size_nm else "px"
        self.time = 1.0 / fps if fps else 1.0
        self.time_label = "s" if fps else "frames"


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def trajectories_figure(result: AnalysisResult, units: _Units) -> Figure:
    """Every trajectory as a line coloured by time, with its particle id at the start."""
    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot()
    table = result.table
    t_all = table["t_s"].to_numpy() if "t_s" in table.columns and units.time_label == "s" else \
        table["frame"].to_numpy() * units.time
    norm_lo, norm_hi = float(np.nanmin(t_all)), float(np.nanmax(t_all)) or 1.0
    collection = None
    for pid, group in table.groupby("particle"):
        xy = group[["x", "y"]].to_numpy() * units.length
        t = group["t_s"].to_numpy() if "t_s" in group.columns and units.time_label == "s" else \
            group["frame"].to_numpy() * units.time
        if xy.shape[0] >= 2:
            segments = np.stack([xy[:-1], xy[1:]], axis=1)  # (K, 2 ends, 2 coordinates)
            collection = LineCollection(list(segments), cmap="viridis", linewidths=1.2)
            collection.set_array(0.5 * (t[:-1] + t[1:]))
            collection.set_clim(norm_lo, norm_hi)
            ax.add_collection(collection)
        ax.annotate(str(pid), xy[0], fontsize=8, color="black")
    ax.autoscale()
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()
    ax.set_xlabel(f"x ({units.length_label})")
    ax.set_ylabel(f"y ({units.length_label})")
    ax.set_title("Trajectories (colour: time)")
    if collection is not None:
        fig.colorbar(collection, ax=ax, label=f"time ({units.time_label})")
    return fig


def msd_figure(result: AnalysisResult, units: _Units) -> Figure:
    """Per-particle tMSD on log-log axes with their fits over the fit range, and the ensemble MSD."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(result.msds))]
    area = units.length**2
    for colour, (pid, m) in zip(colours, result.msds.items(), strict=True):
        m = m.measured()
        if m.lag_frames.size == 0:
            continue
        ax.loglog(m.lag_frames * units.time, m.msd * area, "o", ms=3, color=colour, alpha=0.7, label=str(pid))
        fit = result.fits[pid]
        if np.isfinite(fit.alpha):
            lag = np.linspace(fit.lag_min, fit.lag_max, 50)
            model = 4 * fit.D * lag**fit.alpha + fit.offset
            ax.loglog(lag * units.time, model * area, "-", color=colour, lw=1.5)
    ens = result.ensemble.measured()
    if ens.lag_frames.size:
        ax.loglog(ens.lag_frames * units.time, ens.msd * area, "k-", lw=2, label="ensemble")
    ax.set_xlabel(f"lag ({units.time_label})")
    ax.set_ylabel(f"tMSD ({units.length_label}$^2$)")
    ax.set_title(r"tMSD with fits $4D\tau^\alpha + 4\sigma^2$ (lines: fit range)")
    if len(result.msds) <= 15:
        ax.legend(fontsize=7, title="particle", title_fontsize=7)
    return fig


def displacement_figure(result: AnalysisResult, units: _Units) -> Figure:
    """PDFs of dx, dy (with the Gaussian of equal variance) and |dr| (with the Rayleigh) per lag."""
    fig = Figure(figsize=(10, 4))
    ax_xy, ax_r = fig.subplots(1, 2)
    for i, d in enumerate(result.distributions):
        colour = f"C{i % 10}"
        lag_label = f"{d.lag_frames * units.time:g} {units.time_label}"
        x = d.centers_xy * units.length
        ax_xy.semilogy(x, d.pdf_dx / units.length, "o", ms=3, color=colour,
                       label=f"Δx, lag {lag_label} (κ={d.kurtosis_dx:.2f})")
        ax_xy.semilogy(x, d.pdf_dy / units.length, "s", ms=3, mfc="none", color=colour,
                       label=f"Δy (κ={d.kurtosis_dy:.2f})")
        ax_xy.semilogy(x, d.gauss_dx / units.length, "-", color=colour, lw=1)
        r = d.centers_r * units.length
        ax_r.plot(r, d.pdf_r / units.length, "o", ms=3, color=colour, label=f"|Δr|, lag {lag_label}")
        ax_r.plot(r, d.rayleigh_r / units.length, "-", color=colour, lw=1)
    ax_xy.set_xlabel(f"displacement ({units.length_label})")
    ax_xy.set_ylabel(f"PDF (1/{units.length_label})")
    ax_xy.set_title("Δx, Δy; lines: Gaussian of equal variance (κ: excess kurtosis)", fontsize=9)
    ax_r.set_xlabel(f"|Δr| ({units.length_label})")
    ax_r.set_ylabel(f"PDF (1/{units.length_label})")
    ax_r.set_title("|Δr|; lines: 2-D Gaussian (Rayleigh) of equal <Δr²>", fontsize=9)
    for ax in (ax_xy, ax_r):
        if result.distributions:
            ax.legend(fontsize=7)
    return fig


def velocity_figure(result: AnalysisResult, units: _Units) -> Figure:
    """Ensemble velocity autocorrelation C_v(tau) with the Brownian (0) and noise-limited (-1/2) references."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    cv = result.velocity
    ok = cv.n > 0
    ax.plot(cv.lag_frames[ok] * units.time, cv.cv[ok], "o-", color="C0", ms=4)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.axhline(-0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"lag τ ({units.time_label})")
    ax.set_ylabel(r"$C_v(\tau)$")
    ax.set_title(f"Velocity autocorrelation (v over {cv.step_frames} frame; dashed: -1/2)")
    return fig


#: Every figure of an analysis, by file stem (the Python API's ``Analysis.figure(name)`` uses the same names).
FIGURE_NAMES: tuple[str, ...] = ("trajectories", "tmsd", "displacements", "velocity_autocorrelation")


def draw_figure(result: AnalysisResult, name: str) -> Figure:
    """Draw the figure ``name`` (one of `FIGURE_NAMES`) without saving it."""
    drawers = {"trajectories": trajectories_figure, "tmsd": msd_figure, "displacements": displacement_figure,
               "velocity_autocorrelation": velocity_figure}
    if name not in drawers:
        raise ValueError(f"unknown figure {name!r}; choose from {', '.join(FIGURE_NAMES)}")
    fig = drawers[name](result, _Units(result.calibration.pixel_size_nm, result.calibration.fps))
    if result.warnings:  # e.g. random weights: stamped on every figure
        fig.suptitle("WARNING: " + "; ".join(result.warnings), color="red", fontsize=10, y=1.02)
    return fig


def draw_all(result: AnalysisResult, out_dir: Path) -> list[Path]:
    """Draw and save every figure; returns the files written."""
    paths: list[Path] = []
    for stem in FIGURE_NAMES:
        paths.extend(_save(draw_figure(result, stem), Path(out_dir), stem))
    return paths
