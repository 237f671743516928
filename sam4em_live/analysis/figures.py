"""Figures of an analysis (SAM4EM paper Fig. 1c-d style), drawn from computed results only.

Nothing here computes statistics: every number comes from
`sam4em_live.analysis.result.AnalysisResult`. The tMSD, displacement and C_v figures are drawn in
`sam4em_live.analysis.plots` (readable log ticks, lags in frames and seconds, fits above data,
uncertainties in the legends); this module names them and saves them. Figures are built on
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

from sam4em_live.analysis.plots.axes import FigureUnits
from sam4em_live.analysis.plots.distributions import displacement_figure, velocity_figure
from sam4em_live.analysis.plots.msd import msd_figure

if TYPE_CHECKING:
    from sam4em_live.analysis.result import AnalysisResult

__all__ = [
    "FIGURE_NAMES", "FORMATS", "FigureUnits", "displacement_figure", "draw_all", "draw_figure", "msd_figure",
    "trajectories_figure", "velocity_figure",
]

FORMATS: tuple[str, ...] = ("png", "pdf")


#: The units of a figure (the old private name, kept for callers of the figure functions).
_Units = FigureUnits


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def trajectories_figure(result: AnalysisResult, units: FigureUnits) -> Figure:
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


#: Every figure of an analysis, by file stem (the Python API's ``Analysis.figure(name)`` uses the same names).
FIGURE_NAMES: tuple[str, ...] = ("trajectories", "tmsd", "displacements", "velocity_autocorrelation")


def draw_figure(result: AnalysisResult, name: str) -> Figure:
    """Draw the figure ``name`` (one of `FIGURE_NAMES`) without saving it."""
    drawers = {"trajectories": trajectories_figure, "tmsd": msd_figure, "displacements": displacement_figure,
               "velocity_autocorrelation": velocity_figure}
    if name not in drawers:
        raise ValueError(f"unknown figure {name!r}; choose from {', '.join(FIGURE_NAMES)}")
    fig = drawers[name](result, FigureUnits(result.calibration.pixel_size_nm, result.calibration.fps))
    if result.warnings:  # e.g. random weights: stamped on every figure
        fig.suptitle("WARNING: " + "; ".join(result.warnings), color="red", fontsize=10, y=1.02)
    return fig


def draw_all(result: AnalysisResult, out_dir: Path) -> list[Path]:
    """Draw and save every figure; returns the files written."""
    paths: list[Path] = []
    for stem in FIGURE_NAMES:
        paths.extend(_save(draw_figure(result, stem), Path(out_dir), stem))
    return paths
