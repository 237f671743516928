"""Rolling tMSD panel: log-log, one curve per particle in its colour, fitted α listed."""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from PySide6 import QtWidgets

from sam4em_live.monitor.imaging import particle_colour
from sam4em_live.monitor.model import msd_curve


class MsdPanel(QtWidgets.QWidget):
    """Plots ``stats`` (particle id → rolling statistics mapping) from the results."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setLogMode(x=True, y=True)
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.plot.setTitle("rolling tMSD")
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).enableAutoSIPrefix(False)  # units are in the label; no "(x0.001)"
        self.alpha_label = QtWidgets.QLabel("no statistics yet")
        self.alpha_label.setWordWrap(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.alpha_label)
        self._curves: dict[int, pg.PlotDataItem] = {}
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
        for pid in sorted(stats):
            curve = msd_curve(stats[pid])
            item = self._curves.get(pid)
            if curve is None:
                if item is not None:
                    item.setData([], [])
                continue
            if item is None:
                colour = particle_colour(pid)
                item = self._curves[pid] = self.plot.plot(
                    pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=4, symbolBrush=colour, symbolPen=None)
            item.setData(curve.lag, curve.msd)
            self._set_units(curve.lag_unit, curve.msd_unit)
            alpha = "–" if curve.alpha is None else f"{curve.alpha:.2f}"
            hex_colour = "#{:02x}{:02x}{:02x}".format(*particle_colour(pid))
            lines.append(f"<span style='color:{hex_colour}'>■</span> #{pid}: α = {alpha}")
        for pid in [p for p in self._curves if p not in stats]:
            self.plot.removeItem(self._curves.pop(pid))
        self.alpha_label.setText(" &nbsp; ".join(lines) if lines else "no statistics yet")

    def _set_units(self, lag_unit: str, msd_unit: str) -> None:
        if self._units != (lag_unit, msd_unit):
            self._units = (lag_unit, msd_unit)
            self.plot.setLabel("bottom", f"lag ({lag_unit})")
            self.plot.setLabel("left", f"tMSD ({msd_unit})")
