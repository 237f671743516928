"""The monitor against the real service on loopback: camera → service → monitor, prompts back over control."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6 import QtCore, QtGui
from PySide6.QtTest import QTest

from sam4em_live.config import ServiceConfig
from sam4em_live.control.client import ControlClient
from sam4em_live.frames import Calibration, SeriesInfo
from sam4em_live.monitor.imaging import particle_colour
from sam4em_live.monitor.subscriber import ResultsSubscriber
from sam4em_live.monitor.window import MonitorWindow
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sources.camera import FramePublisher
from tests.monitor_helpers import hue_of

pytestmark = pytest.mark.qt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SHAPE = (128, 160)
RADIUS_PX = 7.0
CAMERA_FPS = 40.0


def truth(index: int) -> dict[int, tuple[float, float]]:
    """Two disks circling slowly (x, y px) so the stream can run as long as a test needs."""
    angle = index / 40.0
    return {1: (45.0 + 6 * math.cos(angle), 50.0 + 6 * math.sin(angle)),
            2: (110.0 + 6 * math.cos(angle), 85.0 - 6 * math.sin(angle))}


def render_frame(index: int, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    image = np.full(SHAPE, 100.0)
    for x, y in truth(index).values():
        image[(cols - x) ** 2 + (rows - y) ** 2 <= RADIUS_PX**2] = 60.0
    return np.clip(image + rng.normal(0, 4, SHAPE), 0, 65535).astype(np.uint16)


class Camera:
    """The stand-in detector (`FramePublisher`) fed by a thread until stopped."""

    def __init__(self) -> None:
        self.publisher = FramePublisher("tcp://127.0.0.1:0")
        self.endpoint = self.publisher.endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        self.publisher.send_series_start(SeriesInfo("cam", SHAPE, "<u2", Calibration(fps=CAMERA_FPS, pixel_size_nm=2.0)))
        index = 0
        while not self._stop.wait(1.0 / CAMERA_FPS):
            self.publisher.send_frame(render_frame(index, rng), "cam", index, time.time())
            index += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.publisher.close()


@pytest.fixture(scope="module")
def live_service(tmp_path_factory):
    camera = Camera()
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": camera.endpoint},
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False},
        "publisher": {"endpoint": "tcp://127.0.0.1:0", "preview_fps": 25.0, "preview_max_edge_px": 80},
        "control": {"endpoint": "tcp://127.0.0.1:0"},
        "calibration": {"pixel_size_nm": 2.0, "fps": CAMERA_FPS},
        "pipeline": {"status_interval_s": 0.25},
        "stats": {"publish_every_frames": 5},
    })
    built = build_service(config, edits=[Prompt(1, 0, (truth(0)[1],), (1,))])
    built.service.start()
    time.sleep(0.3)  # let the service's SUB socket join before the first frame
    camera.start()
    yield built
    camera.stop()
    built.service.stop()
    built.close()


def _pixel(image: QtGui.QImage, window: MonitorWindow, x: float, y: float) -> np.ndarray:
    point = window.frame_view.widget_point(x, y)
    colour = image.pixelColor(point.x(), point.y())
    return np.array([colour.red(), colour.green(), colour.blue()], float)


def _present(window: MonitorWindow, pid: int) -> bool:
    view = window.model.particles.get(pid)
    return view is not None and view.present


def test_monitor_shows_the_service_and_its_click_prompts_are_applied(live_service, qtbot):
    subscriber = ResultsSubscriber(live_service.publisher.endpoint)
    subscriber.start()
    client = ControlClient(live_service.control.endpoint, timeout_s=2.0)
    window = MonitorWindow(subscriber, client, source_name="live service")
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    try:
        qtbot.waitUntil(lambda: window.model.preview is not None and _present(window, 1), timeout=10000)
        assert not _present(window, 2), "particle 2 was never prompted"
        window.refresh()
        image = window.frame_view.viewport().grab().toImage()
        x1, y1 = window.model.particles[1].x, window.model.particles[1].y
        inside, background = _pixel(image, window, x1 - 3, y1 + 3), _pixel(image, window, 10.0, 120.0)
        assert abs(hue_of(inside) - hue_of(particle_colour(1))) < 0.05 and np.ptp(inside) > 30, inside
        assert np.ptp(background) < 6, background

        # A synthetic click on the untracked particle: a new id, sent over the control channel.
        frame_clicked = int(window.model.result["frame"])
        x2, y2 = truth(frame_clicked)[2]
        QTest.mouseClick(window.frame_view.viewport(), QtCore.Qt.MouseButton.LeftButton,
                         QtCore.Qt.KeyboardModifier.NoModifier, window.frame_view.widget_point(x2, y2))
        assert window.edits_sent and window.edits_sent[0].particle == 2
        assert window.edits_sent[0].points[0] == pytest.approx((x2, y2), abs=1.0)
        qtbot.waitUntil(lambda: _present(window, 2), timeout=5000)
        seen = window.model.particles[2]
        expected = truth(int(window.model.result["frame"]))[2]
        assert math.hypot(seen.x - expected[0], seen.y - expected[1]) < 1.0  # the service tracks it now
        # The control reply may be collected a tick after the results show the particle.
        qtbot.waitUntil(lambda: "applied" in window.message_label.text(), timeout=3000)
        qtbot.waitUntil(lambda: window.model.tails.get(2) is not None and len(window.model.tails[2].xy) > 5)
        window.refresh()
        ARTIFACTS.mkdir(exist_ok=True)
        window.snapshot(str(ARTIFACTS / "monitor_service.png"))

        # Select it by clicking its mask, then remove it: it disappears from the results.
        x2, y2 = seen.x, seen.y
        QTest.mouseClick(window.frame_view.viewport(), QtCore.Qt.MouseButton.LeftButton,
                         QtCore.Qt.KeyboardModifier.NoModifier, window.frame_view.widget_point(x2, y2))
        assert window.selected == 2
        window.remove_selected()
        qtbot.waitUntil(lambda: 2 not in window.model.particles, timeout=5000)
        assert _present(window, 1)
    finally:
        window.shutdown()
        client.close()


def test_snapshot_command_renders_the_particles(live_service, tmp_path):
    out = tmp_path / "dashboard.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    command = [sys.executable, "-m", "sam4em_live", "monitor", "--connect", live_service.publisher.endpoint,
               "--snapshot", str(out), "--after", "2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "results received" in done.stdout
    image = QtGui.QImage(str(out))
    assert image.width() >= 800 and image.height() >= 500
    pixels = np.frombuffer(image.convertToFormat(QtGui.QImage.Format.Format_RGB888).constBits(), np.uint8)
    rgb = pixels[: image.height() * image.bytesPerLine()].reshape(image.height(), -1)[:, : image.width() * 3]
    rgb = rgb.reshape(image.height(), image.width(), 3).astype(int)
    target = np.array(particle_colour(1)) / 255.0
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    coloured = rgb[spread > 30]
    hues = np.array([hue_of(c) for c in coloured[:: max(1, len(coloured) // 4000)]])
    share = np.mean(np.abs(hues - hue_of(target * 255)) < 0.05) if hues.size else 0.0
    assert coloured.shape[0] > 300 and share > 0.05, (coloured.shape, share)
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(str(ARTIFACTS / "monitor_snapshot.png"))
