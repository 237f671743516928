"""The dashboard widget offscreen, fed by a real ResultsPublisher on loopback: pixels, pause, gestures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest

from sam4em_live.monitor.imaging import particle_colour
from sam4em_live.monitor.qt_runtime import check_qt_bindings
from sam4em_live.monitor.subscriber import ResultsSubscriber
from sam4em_live.monitor.window import MonitorWindow
from sam4em_live.particles import Prompt, RemoveParticle
from sam4em_live.results import ParticleStatistics
from tests.monitor_helpers import RADIUS_PX, Streamer, hue_of, open_publisher

pytestmark = pytest.mark.qt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
POSITIONS = {1: (80.0, 90.0), 2: (180.0, 150.0)}
STATS = {1: ParticleStatistics(lag_frames=(1, 2, 4, 8), lag_s=(0.02, 0.04, 0.08, 0.16), msd_px2=(1.0, 2.1, 3.9, 8.2),
                               msd_nm2=(4.0, 8.4, 15.6, 32.8), n=(9, 8, 6, 2), fit_lags=4, window_frames=10,
                               frames_seen=10, frames_in_window=10, alpha=0.98)}


class RecordingSink:
    """The `PromptSink` seam, recording what the window sends (the service path is in test_monitor_service)."""

    def __init__(self):
        self.calls = []

    def add_prompt(self, particle, points, labels, box):
        self.calls.append(("add_prompt", particle, [tuple(p) for p in points], list(labels), box))

    def remove(self, particle):
        self.calls.append(("remove", particle))


@pytest.fixture
def dashboard(qtbot):
    publisher = open_publisher(random_weights=True)
    streamer = Streamer(publisher, POSITIONS, fps=50.0, stats=STATS)
    subscriber = ResultsSubscriber(publisher.endpoint)
    subscriber.start()
    sink = RecordingSink()
    window = MonitorWindow(subscriber, sink, levels=None, source_name=publisher.endpoint)
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    qtbot.waitUntil(lambda: window.model.preview is not None and window.model.particles
                    and window.model.stats and window.frames_drawn > 3, timeout=8000)
    yield window, sink, streamer
    window.shutdown()
    streamer.stop()
    publisher.close()


def _pixel(image: QtGui.QImage, window: MonitorWindow, x: float, y: float) -> np.ndarray:
    point = window.frame_view.widget_point(x, y)
    colour = image.pixelColor(point.x(), point.y())
    return np.array([colour.red(), colour.green(), colour.blue()], float)


def test_overlays_are_drawn_at_the_particles_in_their_colours(dashboard, qtbot):
    window, _, _ = dashboard
    window.refresh()
    image = window.frame_view.viewport().grab().toImage()
    ARTIFACTS.mkdir(exist_ok=True)
    window.snapshot(str(ARTIFACTS / "monitor_widget.png"))
    background = _pixel(image, window, 30.0, 200.0)
    assert np.ptp(background) < 6, f"background should be grey, got {background}"
    for pid, (x, y) in POSITIONS.items():
        inside = _pixel(image, window, x - RADIUS_PX / 2, y + RADIUS_PX / 2)  # off the centre (tail dot there)
        outside = _pixel(image, window, x - RADIUS_PX - 5, y + RADIUS_PX + 5)
        assert np.ptp(inside) > 40, f"#{pid}: no coloured overlay at the particle: {inside}"
        assert abs(hue_of(inside) - hue_of(particle_colour(pid))) < 0.04, f"#{pid}: wrong colour {inside}"
        assert np.ptp(outside) < 6, f"#{pid}: overlay leaks outside the mask: {outside}"
    assert window.banner.isVisible(), "random weights must be announced"
    qtbot.waitUntil(lambda: "near_edge #2 (synthetic)" in window.events_label.text(), timeout=3000)
    assert "camera 50.0 fps" in window.status_label.text()
    curve = window.msd_panel._curves[1].getData()
    np.testing.assert_allclose(10 ** np.asarray(curve[1]), STATS[1].msd_nm2, rtol=1e-6)  # nm² preferred
    assert "α = 0.98" in window.msd_panel.alpha_label.text()


def test_contrast_levels_are_fixed_until_asked(dashboard):
    window, _, _ = dashboard
    levels = window.lut.levels
    version = window.lut_version
    for _ in range(5):
        window.refresh()
    assert window.lut.levels == levels and window.lut_version == version  # no per-frame autoscale
    window.high_spin.setValue(levels[1] + 500.0)
    assert window.lut.levels[1] == pytest.approx(levels[1] + 500.0)
    window.auto_levels()
    assert window.lut.levels[0] == pytest.approx(levels[0], abs=40) and window.lut_version > version


def test_pause_freezes_the_display_not_the_feed(dashboard, qtbot):
    window, _, _ = dashboard
    window.pause_button.click()
    drawn, received = window.frames_drawn, window.model.results_received
    qtbot.wait(400)
    assert window.frames_drawn == drawn and window.model.results_received > received + 5
    window.pause_button.click()
    qtbot.waitUntil(lambda: window.frames_drawn > drawn, timeout=2000)


def _click(window, x, y, modifier=QtCore.Qt.KeyboardModifier.NoModifier):
    QTest.mouseClick(window.frame_view.viewport(), QtCore.Qt.MouseButton.LeftButton, modifier,
                     window.frame_view.widget_point(x, y))


def _drag(window, start, end):
    viewport = window.frame_view.viewport()
    a, b = window.frame_view.widget_point(*start), window.frame_view.widget_point(*end)
    left, none = QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.MouseButton.NoButton
    no_mod = QtCore.Qt.KeyboardModifier.NoModifier
    events = [(QtCore.QEvent.Type.MouseButtonPress, a, left, left)]
    events += [(QtCore.QEvent.Type.MouseMove, a + (b - a) * k / 5, none, left) for k in range(1, 6)]
    events += [(QtCore.QEvent.Type.MouseButtonRelease, b, left, none)]
    for kind, pos, button, buttons in events:
        local = QtCore.QPointF(pos)
        event = QtGui.QMouseEvent(kind, local, viewport.mapToGlobal(local), button, buttons, no_mod)
        QtWidgets.QApplication.sendEvent(viewport, event)


def test_gestures_become_prompts(dashboard, qtbot):
    window, sink, _ = dashboard
    _click(window, 40.0, 50.0)  # empty background, nothing selected: new particle #3
    qtbot.waitUntil(lambda: len(sink.calls) == 1, timeout=2000)
    call = sink.calls[0]
    assert call[:2] == ("add_prompt", 3) and call[3] == [1] and call[4] is None
    assert call[2][0] == pytest.approx((40.0, 50.0), abs=1.0)  # within a screen pixel of the click
    _click(window, *POSITIONS[2])  # on a mask: select, no prompt
    assert window.selected == 2, window.message_label.text()
    _click(window, 190.0, 160.0, QtCore.Qt.KeyboardModifier.ShiftModifier)  # negative point for #2
    qtbot.waitUntil(lambda: len(sink.calls) == 2, timeout=2000)
    name, pid, points, labels, _ = sink.calls[1]
    assert (name, pid, labels) == ("add_prompt", 2, [1, 0])
    assert points[0] == pytest.approx(POSITIONS[2], abs=0.5) and points[1] == pytest.approx((190.0, 160.0), abs=1.0)
    window.remove_selected()
    qtbot.waitUntil(lambda: len(sink.calls) == 3, timeout=2000)
    assert sink.calls[2] == ("remove", 2) and window.selected is None
    _drag(window, (20.0, 30.0), (60.0, 70.0))  # box for a new particle (#3 reserved by the first click)
    qtbot.waitUntil(lambda: len(sink.calls) == 4, timeout=2000)
    name, pid, _, _, box = sink.calls[3]
    assert (name, pid) == ("add_prompt", 4)
    np.testing.assert_allclose(box, (20.0, 30.0, 60.0, 70.0), atol=1.0)
    assert window.edits_sent[2] == RemoveParticle(2) and isinstance(window.edits_sent[0], Prompt)


def test_a_long_display_session_keeps_reference_counts_stable(dashboard):
    """Hundreds of display updates must not drain None/True/False (broken bindings abort the monitor)."""
    import sys

    window, _, _ = dashboard
    check_qt_bindings()
    before = [sys.getrefcount(v) for v in (None, True, False)]
    for _ in range(300):
        window.refresh()
        window.frame_view.viewport().repaint()
    after = [sys.getrefcount(v) for v in (None, True, False)]
    assert all(later - earlier > -100 for earlier, later in zip(before, after, strict=True)), (before, after)
