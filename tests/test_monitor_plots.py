"""The monitor's statistics plot and frame view (issue 20): readable log ticks, fits above data, an α = 1
guide, D ± and α ± in the labels, a scale bar when the pixel size is known. Offscreen Qt, real widgets."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6 import QtGui

from sam4em_live.monitor.log_axis import ReadableLogAxis
from sam4em_live.monitor.model import msd_curve
from sam4em_live.monitor.msd_panel import Z_DATA, Z_FIT, MsdPanel

pytestmark = pytest.mark.qt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _stats(d: float = 0.5, alpha: float = 0.95, lags: int = 30) -> dict:
    lag = np.arange(1, lags + 1)
    msd = 4 * d * lag**alpha + 0.3
    return {"lag_frames": lag.tolist(), "lag_s": (lag / 40.0).tolist(), "msd_px2": msd.tolist(),
            "msd_nm2": (msd * 4.0).tolist(), "n": (200 - lag).tolist(), "D_px2_per_frame": d, "D_err": 0.02,
            "alpha": alpha, "alpha_err": 0.031, "offset_px2": 0.3, "fit_lags": 4, "D_nm2_per_s": 64.1,
            "D_nm2_per_s_err": 3.27}


def _text_rects(axis: pg.AxisItem) -> list[tuple[str, object]]:
    image = QtGui.QImage(10, 10, QtGui.QImage.Format.Format_ARGB32)
    painter = QtGui.QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [(text, rect) for rect, _flags, text in (specs[2] if specs else []) if text]


def _overlapping(axis: pg.AxisItem) -> list[tuple[str, str]]:
    rects = _text_rects(axis)
    return [(a, b) for (a, ra), (b, rb) in combinations(rects, 2) if ra.intersects(rb)]


def _log_plot(qtbot, axis_class: type[pg.AxisItem], decades: float, start: float) -> pg.PlotWidget:
    plot = pg.PlotWidget(axisItems={"bottom": axis_class("bottom"), "left": axis_class("left")})
    qtbot.addWidget(plot)
    plot.resize(420, 300)
    plot.setLogMode(x=True, y=True)
    x = np.geomspace(start, start * 10**decades, 20)
    plot.plot(x, x)
    plot.setRange(xRange=(np.log10(start), np.log10(start) + decades),
                  yRange=(np.log10(start), np.log10(start) + decades), padding=0)
    plot.show()
    qtbot.waitExposed(plot)
    for _ in range(3):  # the left axis widens to its labels over the first paints (pyqtgraph drops unfit text)
        plot.repaint()
        qtbot.wait(30)
    return plot


@pytest.mark.parametrize("decades", [0.5, 1.5, 3.0, 6.0])
@pytest.mark.parametrize("start", [1.0, 2.3e-4])
def test_log_axis_labels_never_overlap(qtbot, decades: float, start: float) -> None:
    plot = _log_plot(qtbot, ReadableLogAxis, decades, start)
    for name in ("bottom", "left"):
        axis = plot.getAxis(name)
        assert _overlapping(axis) == [], (name, [t for t, _ in _text_rects(axis)])
        assert len(_text_rects(axis)) >= 2, (name, decades)


def test_pyqtgraphs_own_log_axis_overlaps_where_ours_does_not(qtbot) -> None:
    plot = _log_plot(qtbot, pg.AxisItem, 1.5, 2.3e-4)  # the check can fail: the default crowds its labels
    assert any(_overlapping(plot.getAxis(name)) for name in ("bottom", "left"))


def test_fit_is_drawn_above_the_data_with_d_and_alpha_errors(qtbot) -> None:
    panel = MsdPanel()
    qtbot.addWidget(panel)
    panel.resize(520, 460)
    panel.show()
    panel.show_stats({1: _stats(), 2: _stats(d=1.5, alpha=0.7)}, version=1)
    qtbot.waitExposed(panel)
    for pid in (1, 2):
        lag, msd = panel._fits[pid].getData()
        assert len(lag) > 10 and panel._fits[pid].zValue() == Z_FIT > panel._curves[pid].zValue() == Z_DATA
    lag, msd = panel._fits[1].getData()  # log10 data: the fit in nm² and s, over the 4 fit lags
    np.testing.assert_allclose(10 ** np.asarray(msd), 4.0 * (4 * 0.5 * (10 ** np.asarray(lag) * 40) ** 0.95 + 0.3))
    assert 10 ** lag[-1] == pytest.approx(4 / 40.0)
    text = panel.alpha_label.text()
    assert "#1: D = 64.1 ± 3.3 nm²/s^α, α = 0.950 ± 0.031" in text and "#2:" in text
    guide_lag, guide_msd = panel.guide.getData()
    assert np.allclose(np.diff(guide_msd) / np.diff(guide_lag), 1.0)  # slope 1 on log-log: α = 1
    for _ in range(3):
        panel.repaint()
        qtbot.wait(30)
    ARTIFACTS.mkdir(exist_ok=True)
    panel.grab().save(str(ARTIFACTS / "monitor_msd_panel.png"))


def test_fit_text_without_calibration_and_without_fit() -> None:
    stats = _stats()
    del stats["D_nm2_per_s"], stats["D_nm2_per_s_err"], stats["msd_nm2"], stats["lag_s"]
    curve = msd_curve(stats)
    assert curve is not None and curve.fit_text == "D = 0.500 ± 0.020 px²/frame^α, α = 0.950 ± 0.031"
    assert curve.fit_lag[-1] == pytest.approx(4.0)
    bare = msd_curve({"lag_frames": [1, 2], "msd_px2": [1.0, 2.0]})
    assert bare is not None and bare.fit_text == "" and bare.fit_lag.size == 0


def test_frame_view_scale_bar_follows_the_pixel_size(qtbot) -> None:
    from sam4em_live.monitor.frame_view import FrameView

    view = FrameView()
    qtbot.addWidget(view)
    view._draw_scale_bar(2.0, 256)  # a fifth of 512 nm: 102 nm, so 100 nm = 50 px
    assert view.scale_bar is not None and view.scale_bar.size == pytest.approx(50.0)
    assert view.scale_bar.text.toPlainText() == "100 nm"
    view._draw_scale_bar(None, 256)  # no pixel size: no bar (the frame is in pixels anyway)
    assert view.scale_bar is None
