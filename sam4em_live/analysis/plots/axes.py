"""Units, lag axes (frames and seconds), value ± error text and scale bars shared by the analysis figures.

Lags are drawn in frames on the bottom axis, always: they are what was measured. With a frame rate
the top axis reads the same lags in seconds; without one the bottom axis says that no frame rate is
known (`sam4em_live.analysis.time_axis`), never an invented rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.analysis.plots.log_ticks import apply_log_ticks
from sam4em_live.analysis.plots.numbers import format_pm, nice_length
from sam4em_live.stats.fit import to_physical

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from sam4em_live.stats.fit import MsdFit


class FigureUnits:
    """Scale factors and labels for the figure axes (nm and s when known, else px and frames)."""

    def __init__(self, pixel_size_nm: float | None, fps: float | None) -> None:
        self.pixel_size_nm = pixel_size_nm
        self.fps = fps
        self.length = pixel_size_nm or 1.0
        self.length_label = "nm" if pixel_size_nm else "px"
        self.time = 1.0 / fps if fps else 1.0
        self.time_label = "s" if fps else "frames"

    def diffusion(self, fit: MsdFit) -> tuple[float, float, str]:
        """(D, D_err, unit) of a fit done in px² and frames, in nm²/s^α where the calibration allows."""
        value, err = to_physical(fit, self.pixel_size_nm or 1.0, self.fps or 1.0)
        time = "s" if self.fps else "frame"
        exponent = "" if fit.model == "linear" else r"^{\alpha}"
        return value, err, rf"{self.length_label}$^2$/{time}${exponent}$"


def fit_label(fit: MsdFit, units: FigureUnits) -> str:
    """Legend text of an anomalous fit: D ± err (unit), α ± err."""
    d, d_err, unit = units.diffusion(fit)
    return f"D = {format_pm(d, d_err)} {unit}, α = {format_pm(fit.alpha, fit.alpha_err)}"


def lag_axes(ax: Axes, fps: float | None, log: bool, what: str = "lag τ", top_of: Axes | None = None) -> None:
    """Lags in frames on the bottom axis of ``ax``, in seconds (``fps`` known) on top of ``top_of``.

    ``top_of`` (default ``ax``) shares ``ax``'s lags: the upper panel of a stack.
    """
    if fps:
        ax.set_xlabel(f"{what} (frames)")
        top = (top_of or ax).secondary_xaxis("top", functions=(lambda f: np.asarray(f) / fps,
                                                                            lambda s: np.asarray(s) * fps))
        top.set_xlabel(f"{what} (s, at {fps:.4g} fps)")
        if log:
            apply_log_ticks(top.xaxis)
    else:
        ax.set_xlabel(f"{what} (frames; no frame rate known)")
    for axes in {id(a): a for a in (ax, top_of or ax)}.values():
        if log:
            apply_log_ticks(axes.xaxis)


def add_scale_bar(ax: Axes, pixel_size_nm: float | None, image_width_px: float, fraction: float = 0.2) -> None:
    """A labelled scale bar in the lower right of an image drawn in pixel coordinates (``imshow``).

    Its length is the round value (1, 2, 5 × 10^k nm) nearest below ``fraction`` of the width; without
    a pixel size it is in px and says so. Drawn white with a black edge: readable on any contrast.
    """
    from matplotlib import patheffects

    scale = pixel_size_nm or 1.0
    length = nice_length(fraction * image_width_px * scale)
    bar_px = length / scale
    x1, x0 = ax.get_xlim()[1], ax.get_xlim()[0]
    y_lo, y_hi = sorted(ax.get_ylim())
    right = max(x0, x1) - 0.05 * abs(x1 - x0)
    y = y_hi - 0.06 * (y_hi - y_lo) if ax.yaxis_inverted() else y_lo + 0.06 * (y_hi - y_lo)
    outline = [patheffects.withStroke(linewidth=4, foreground="black")]
    ax.plot([right - bar_px, right], [y, y], color="white", lw=3, solid_capstyle="butt", path_effects=outline,
            zorder=10)
    unit = "nm" if pixel_size_nm else "px (no pixel size known)"
    text = f"{length:g} {unit}"
    dy = -0.02 * (y_hi - y_lo) if ax.yaxis_inverted() else 0.02 * (y_hi - y_lo)  # above the bar on screen
    ax.text(right - bar_px / 2, y + dy, text, color="white", ha="center", va="bottom",
            fontsize=8, path_effects=[patheffects.withStroke(linewidth=2, foreground="black")], zorder=10)
