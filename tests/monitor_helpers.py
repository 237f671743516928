"""Synthetic results for the monitor tests: real `FrameResult`s through a real `ResultsPublisher`."""

from __future__ import annotations

import colorsys
import threading
import time

import numpy as np

from sam4em_live.config import PublisherConfig
from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
from sam4em_live.results import FrameResult, RunInfo, ServiceEvent
from sam4em_live.sinks.publisher import ResultsPublisher

SHAPE = (256, 256)
RADIUS_PX = 9.0
BACKGROUND, PARTICLE_LEVEL = 1000, 600


def synthetic_result(index: int, positions: dict[int, tuple[float, float]], shape=SHAPE,
                     stats: dict | None = None, seed: int = 0, events: tuple = ()) -> FrameResult:
    """Dark disks at ``positions`` (pid → (x, y) px) on a noisy bright uint16 frame, with true masks."""
    rng = np.random.default_rng(seed + index)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    pixels = rng.normal(BACKGROUND, 20, shape)
    masks = []
    for pid, (x, y) in positions.items():
        disk = (cols - x) ** 2 + (rows - y) ** 2 <= RADIUS_PX**2
        pixels[disk] = PARTICLE_LEVEL
        masks.append(ParticleMask.from_full(pid, disk, 0.9))
    frame = Frame("syn", index, time.time(), pixels.astype(np.uint16), Calibration(pixel_size_nm=2.0, fps=50.0))
    measurements = tuple(measure_mask(m, index) for m in masks)
    return FrameResult(frame, tuple(masks), measurements, stats or {}, events, processed_s=time.time())


def open_publisher(run_id: str = "run-a", endpoint: str = "tcp://127.0.0.1:0", random_weights: bool = True,
                   preview_max_edge_px: int = 128, context=None) -> ResultsPublisher:
    config = PublisherConfig(endpoint=endpoint, preview_fps=1000.0, preview_max_edge_px=preview_max_edge_px)
    publisher = ResultsPublisher(config, context)
    backend = {"backend": "synthetic-test", "random_weights": random_weights}
    publisher.open(RunInfo(run_id, SeriesInfo("syn", SHAPE, "<u2"), backend, {}))
    return publisher


def hue_of(rgb) -> float:
    r, g, b = (float(c) / 255 for c in rgb[:3])
    return colorsys.rgb_to_hsv(r, g, b)[0]


class Streamer:
    """Publishes synthetic results on a thread at ``fps`` until stopped (a stand-in running service)."""

    def __init__(self, publisher: ResultsPublisher, positions, fps: float = 50.0, stats=None) -> None:
        self.publisher, self.positions, self.fps, self.stats = publisher, positions, fps, stats
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0 / self.fps):
            positions = self.positions(self.sent) if callable(self.positions) else self.positions
            events = (ServiceEvent("near_edge", self.sent, 2, {"reason": "synthetic"}),) if self.sent % 25 == 5 else ()
            self.publisher.consume(synthetic_result(self.sent, positions, stats=self.stats, events=events))
            if self.sent % 10 == 0:
                self.publisher.on_status({"state": "streaming", "camera_fps": self.fps,
                                          "processed_fps": self.fps, "queue_depth": 1, "frames_dropped": 0})
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
