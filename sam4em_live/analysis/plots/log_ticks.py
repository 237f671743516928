"""Log-axis ticks whose labels never overlap, on any span (0.3 to 10+ decades).

Matplotlib's default log axis labels the minor ticks (2, 3, ... 9 x 10^k) when fewer than about two
decades are shown, and on a 1.5-decade axis those labels run into each other. `ReadableLogLocator`
chooses the labelled ticks from the axis' length in pixels instead: the densest of 1-2-3-...-9,
1-2-5, 1-3, 1 per decade, 1 per 2, 3, ... decades whose closest pair is still wider apart than a
label. `TickLabelFormatter` writes what the locator planned for: plain numbers between 10^-3 and
10^4 ("0.02", "500"), m×10^e outside. Minor ticks (2..9 × 10^k) stay, unlabelled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import rcParams
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import Formatter, LogLocator, NullFormatter

if TYPE_CHECKING:
    from matplotlib.axis import Axis

#: Candidate labelled ticks per decade (mantissas), densest first.
_SUBS: tuple[tuple[float, ...], ...] = ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 5, 7), (1, 2, 5), (1, 3), (1,))
#: Free space between neighbouring labels, as a fraction of a label's extent.
_MARGIN = 0.4


def tick_text(value: float) -> str:
    """A tick label: a plain number between 10^-3 and 10^4, else m×10^e (mathtext)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else ""
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.6g}"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    mantissa = value / 10**exponent
    if abs(mantissa - 1) < 1e-6:
        return rf"$\mathdefault{{10^{{{exponent}}}}}$"
    return rf"$\mathdefault{{{mantissa:.3g}\times10^{{{exponent}}}}}$"


def _label_extent_px(values: np.ndarray, along_x: bool, fontsize_px: float) -> float:
    """Conservative size of the largest label along the axis (x: width; y: height) in pixels."""
    if not along_x:  # mathtext superscripts make labels taller than the font size
        tall = any(tick_text(float(v)).startswith("$") for v in values)
        return (1.6 if tall else 1.25) * fontsize_px
    widest = 0.0
    for v in values:
        text = tick_text(float(v))
        if text.startswith("$"):
            exponent = text.split("{")[-1].rstrip("}$")
            mantissa = text.split(r"\times")[0].split("{")[-1] if r"\times" in text else ""
            width = 0.62 * len(mantissa) + (0.9 if mantissa else 0.0) + 1.25 + 0.5 * len(exponent)
        else:
            width = 0.62 * len(text)
        widest = max(widest, width)
    return widest * fontsize_px


def _candidates(lo: float, hi: float) -> list[np.ndarray]:
    """Labelled tick sets inside [lo, hi] (positive), densest first."""
    first, last = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    decades = np.arange(first, last + 1)
    out = [np.array([m * 10.0**d for d in decades for m in subs]) for subs in _SUBS]
    for step in range(2, 10):  # every 2nd, 3rd ... decade on very long axes
        out.append(10.0 ** decades[decades % step == 0])
    return [np.sort(c[(c >= lo * (1 - 1e-9)) & (c <= hi * (1 + 1e-9))]) for c in out]


def readable_ticks(lo: float, hi: float, length_px: float, along_x: bool, fontsize_px: float) -> np.ndarray:
    """The densest candidate tick set in [lo, hi] whose labels do not touch on an axis ``length_px`` long."""
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and math.isfinite(hi)) or hi <= lo:
        return np.array([lo]) if lo > 0 else np.array([])
    px_per_decade = length_px / math.log10(hi / lo)
    single = np.array([])
    for ticks in _candidates(lo, hi):
        if ticks.size == 1 and single.size == 0:
            single = ticks  # one label always fits; keep looking for two that do
        if ticks.size < 2:
            continue
        gap = float(np.min(np.diff(np.log10(ticks)))) * px_per_decade
        if gap >= (1 + _MARGIN) * _label_extent_px(ticks, along_x, fontsize_px):
            return ticks
    return single


class ReadableLogLocator(LogLocator):
    """Major ticks of a log axis chosen so their labels fit (`readable_ticks`), from the drawn axis length."""

    def __init__(self, fontsize_pt: float | None = None) -> None:
        super().__init__(base=10.0)
        self._fontsize_pt = fontsize_pt

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:  # type: ignore[override]  # same contract
        axis = self.axis
        if axis is None or not hasattr(axis, "axes"):
            return super().tick_values(vmin, vmax)
        along_x = axis.axis_name == "x"
        bbox = axis.axes.bbox
        length = float(bbox.width if along_x else bbox.height)
        dpi = float(axis.figure.dpi) if axis.figure is not None else 100.0
        # not axis.get_ticklabels(): that asks this locator for the ticks (recursion)
        size_pt = self._fontsize_pt or FontProperties(size=rcParams[f"{axis.axis_name}tick.labelsize"]).get_size_in_points()
        return readable_ticks(vmin, vmax, length, along_x, size_pt * dpi / 72.0)


class TickLabelFormatter(Formatter):
    """Labels as `tick_text`: plain numbers in [10^-3, 10^4), m×10^e outside."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return tick_text(x)


def apply_log_ticks(axis: Axis) -> None:
    """Readable labelled ticks on a log-scaled ``axis`` (x or y), unlabelled minor ticks at 2..9 × 10^k."""
    axis.set_major_locator(ReadableLogLocator())
    axis.set_major_formatter(TickLabelFormatter())
    axis.set_minor_locator(LogLocator(base=10.0, subs=tuple(range(2, 10))))
    axis.set_minor_formatter(NullFormatter())
