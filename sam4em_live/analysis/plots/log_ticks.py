"""Log-axis ticks whose labels never overlap, on any span (0.3 to 10+ decades).

Matplotlib's default log axis labels the minor ticks (2, 3, ... 9 x 10^k) when fewer than about two
decades are shown, and on a 1.5-decade axis those labels run into each other. `ReadableLogLocator`
chooses the labelled ticks from the axis' length in pixels instead: the densest of 1-2-3-...-9,
1-2-5, 1-3, 1 per decade, 1 per 2, 3, ... decades whose closest pair is still wider apart than a
label. `TickLabelFormatter` writes what the locator planned for: plain numbers between 10^-3 and
10^4 ("0.02", "500"), m×10^e outside. Minor ticks (2..9 × 10^k) stay, unlabelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib import rcParams
from matplotlib.axis import XAxis, YAxis
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import Formatter, LogLocator, NullFormatter

from sam4em_live.analysis.plots.numbers import readable_ticks, tick_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axis import Axis

class ReadableLogLocator(LogLocator):
    """Major ticks of a log axis chosen so their labels fit (`readable_ticks`), from the drawn axis length."""

    def __init__(self, fontsize_pt: float | None = None) -> None:
        super().__init__(base=10.0)
        self._fontsize_pt = fontsize_pt

    def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
        axis = self.axis
        if not isinstance(axis, (XAxis, YAxis)):  # not on an axis yet (or a colorbar's wrapper)
            return super().tick_values(vmin, vmax)
        along_x = isinstance(axis, XAxis)
        bbox = axis.axes.bbox
        length = float(bbox.width if along_x else bbox.height)
        dpi = float(axis.axes.figure.dpi)
        # not axis.get_ticklabels(): that asks this locator for the ticks (recursion)
        size = rcParams["xtick.labelsize" if along_x else "ytick.labelsize"]
        size_pt = self._fontsize_pt or FontProperties(size=size).get_size_in_points()
        return list(readable_ticks(vmin, vmax, length, along_x, size_pt * dpi / 72.0))


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
