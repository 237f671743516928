"""A pyqtgraph axis whose log-mode tick labels never overlap (the figures' rule, `analysis.plots.numbers`).

pyqtgraph labels the 2..9 × 10^k ticks of a log axis spanning under about three decades, and on a
1.5-decade axis those labels collide. This axis labels the ticks `readable_ticks` chooses for its
length in pixels and font, and draws the other 2..9 × 10^k ticks unlabelled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtGui

from sam4em_live.analysis.plots.numbers import readable_ticks, tick_text

#: ``spacing`` of the unlabelled level, so `logTickStrings` can tell the levels apart.
_MINOR = 0.0
_LABELLED = 1.0


class ReadableLogAxis(pg.AxisItem):
    """`pg.AxisItem` with readable log ticks; linear mode is pyqtgraph's own."""

    def logTickValues(self, minVal: float, maxVal: float, size: float, stdTicks: Any) -> list[tuple[float, list[float]]]:
        lo, hi = 10.0 ** min(minVal, maxVal), 10.0 ** max(minVal, maxVal)
        font = self.style.get("tickFont") or self.font()
        labelled = readable_ticks(lo, hi, float(size), self.orientation in ("top", "bottom"),
                                  float(QtGui.QFontMetricsF(font).height()) / 1.2)
        first, last = int(np.floor(minVal)), int(np.ceil(maxVal))
        minor = [float(d + np.log10(m)) for d in range(first, last + 1) for m in range(1, 10)]
        chosen = [float(np.log10(v)) for v in labelled]
        minor = [v for v in minor if min(minVal, maxVal) <= v <= max(minVal, maxVal)
                 and not any(abs(v - c) < 1e-9 for c in chosen)]
        return [(_LABELLED, chosen), (_MINOR, minor)]

    def logTickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if spacing == _MINOR:
            return ["" for _ in values]
        return [tick_text(10.0 ** v, mathtext=False) for v in values]
