"""Rolling tMSD panel: log-log, one curve per particle in its colour, its fit drawn above it, an α = 1 guide.

As the `analyze` figures: tick labels chosen so they never overlap (`ReadableLogAxis`), fits above the
data, D ± err and α ± err of each particle listed under the plot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from sam4em_live.monitor.imaging import particle_colour
from sam4em_live.monitor.log_axis import ReadableLogAxis
from sam4em_live.monitor.model import MsdCurve, msd_curve

#: Drawing order: guide < data < fits.
Z_GUIDE, Z_DATA, Z_FIT = 1, 2, 3


class MsdPanel(QtWidgets.QWidget):
    """Plots ``stats`` (particle id → rolling statistics mapping) from the results."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(axisItems={"bottom": ReadableLogAxis("bottom"), "left": ReadableLogAxis("left")})
        self.plot.setLogMode(x=True, y=True)
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.setTitle("rolling tMSD; lines: fits; dotted: α = 1")
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)  # units are in the label; no "(x0.001)"
        # room for "3×10⁻⁵" and the axis title from the first paint (pyqtgraph widens the axis only after
        # drawing, and until then the title sits on the tick labels)
        self.plot.getAxis("left").setWidth(72)
        self.guide = self.plot.plot(pen=pg.mkPen((150, 150, 150), width=1, style=QtCore.Qt.PenStyle.DotLine))
        self.guide.setZValue(Z_GUIDE)
        self.alpha_label = QtWidgets.QLabel("no statistics yet")
        self.alpha_label.setWordWrap(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.alpha_label)
        self._curves: dict[int, pg.PlotDataItem] = {}
        self._fits: dict[int, pg.PlotDataItem] = {}
        self._units: tuple[str, str] | None = None
        self._shown = -1

    def show_stats(self, stats: dict[int, dict[str, Any]], version: int) -> None:
        """Redraw when ``version`` changed (the model bumps it on new statistics).

        Not named ``render``: that would shadow ``QWidget.render`` (paint into a device).
        """
        if version == self._shown:
            return
        self._shown = version
        lines = []
        curves: dict[int, MsdCurve] = {}
        for pid in sorted(stats):
            curve = msd_curve(stats[pid])
            if curve is None:
                for item in (self._curves.get(pid), self._fits.get(pid)):
                    if item is not None:
                        item.setData([], [])
                continue
            curves[pid] = curve
            self._draw(pid, curve)
            hex_colour = "#{:02x}{:02x}{:02x}".format(*particle_colour(pid))
            fit = curve.fit_text or ("α = –" if curve.alpha is None else f"α = {curve.alpha:.2f}")
            lines.append(f"<span style='color:{hex_colour}'>■</span> #{pid}: {fit}")
        for pid in [p for p in self._curves if p not in stats]:
            self.plot.removeItem(self._curves.pop(pid))
            if pid in self._fits:
                self.plot.removeItem(self._fits.pop(pid))
        self._draw_guide(curves)
        self.alpha_label.setText(" &nbsp; ".join(lines) if lines else "no statistics yet")

    def _draw(self, pid: int, curve: MsdCurve) -> None:
        colour = particle_colour(pid)
        item = self._curves.get(pid)
        if item is None:
            item = self._curves[pid] = self.plot.plot(
                pen=pg.mkPen((*colour, 110), width=1), symbol="o", symbolSize=4, symbolBrush=colour, symbolPen=None)
            item.setZValue(Z_DATA)
        item.setData(curve.lag, curve.msd)
        fit = self._fits.get(pid)
        if fit is None:
            fit = self._fits[pid] = self.plot.plot(pen=pg.mkPen(colour, width=3))
            fit.setZValue(Z_FIT)
        fit.setData(curve.fit_lag, curve.fit_msd)
        self._set_units(curve.lag_unit, curve.msd_unit)

    def _draw_guide(self, curves: dict[int, MsdCurve]) -> None:
        """∝ τ through the geometric mean of the particles' first points, over every lag shown."""
        if not curves:
            self.guide.setData([], [])
            return
        lag0 = float(np.exp(np.mean([np.log(c.lag[0]) for c in curves.values()])))
        msd0 = float(np.exp(np.mean([np.log(c.msd[0]) for c in curves.values()])))
        lags = np.array([min(c.lag[0] for c in curves.values()), max(c.lag[-1] for c in curves.values())])
        self.guide.setData(lags, msd0 * lags / lag0)

    def _set_units(self, lag_unit: str, msd_unit: str) -> None:
        if self._units != (lag_unit, msd_unit):
            self._units = (lag_unit, msd_unit)
            self.plot.setLabel("bottom", f"lag ({lag_unit})")
            self.plot.setLabel("left", f"tMSD ({msd_unit})")
