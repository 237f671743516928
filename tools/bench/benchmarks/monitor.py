"""Monitor display cost: GUI update time per display frame, offscreen, against a full-rate results stream.

A child process publishes results as the service does (`ResultsPublisher`: ``size``² frames,
``particles`` particles with masks, rolling statistics every 10th result, decimated preview at
``preview_fps``) at ``fps`` for ``seconds``. The dashboard runs offscreen in this process at its normal
~25 Hz timer. Reported: the time of each display update on the GUI thread (take + fold in + draw calls;
Qt's painting follows in the event loop and shows in the achieved display rate), the display rate, and
results sent / received / dropped by the publisher.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.figures import count, integer, number
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping


def _results(n_particles: int, size: int, n_distinct: int = 8) -> list[Any]:
    from sam4em_live.frames import Calibration, Frame
    from sam4em_live.measure import measure_mask
    from sam4em_live.particles import ParticleMask
    from sam4em_live.results import FrameResult

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:size, 0:size]
    out = []
    for k in range(n_distinct):
        pixels = rng.normal(1000, 30, (size, size))
        masks = []
        for pid in range(1, n_particles + 1):
            disk = (cols - (100 + 150 * pid + 3 * k)) ** 2 + (rows - (200 + 100 * pid + 2 * k)) ** 2 <= 20**2
            pixels[disk] = 700
            masks.append(ParticleMask.from_full(pid, disk, 0.9))
        frame = Frame("bench", k, 0.0, pixels.astype(np.uint16), Calibration(pixel_size_nm=1.0, fps=80.0))
        out.append(FrameResult(frame, tuple(masks), tuple(measure_mask(m, k) for m in masks)))
    return out


def _statistics(templates: list[Any]) -> dict[int, Any]:
    """Per-particle rolling statistics as the stats stage makes them, from a short Brownian track."""
    from sam4em_live.particles import ParticleMeasurement
    from sam4em_live.stats.rolling import RollingTrackStats

    rng = np.random.default_rng(1)
    ids = [m.particle for m in templates[0].measurements]
    stats = RollingTrackStats(1024, 100, fps=80.0, pixel_size_nm=1.0)
    xy = np.cumsum(rng.normal(size=(300, len(ids), 2)), axis=0)
    for f in range(300):
        stats.update(f, [ParticleMeasurement(p, f, True, float(xy[f, i, 0]), float(xy[f, i, 1]))
                         for i, p in enumerate(ids)])
    return dict(stats.snapshot())


def _publisher(endpoint_out: Any, ready: Any, seconds: float, fps: float, n_particles: int, size: int,
               preview_fps: float, sent_out: Any) -> None:
    from sam4em_live.config import PublisherConfig
    from sam4em_live.frames import SeriesInfo
    from sam4em_live.results import RunInfo
    from sam4em_live.sinks.publisher import ResultsPublisher

    templates = _results(n_particles, size)
    stats = _statistics(templates)
    publisher = ResultsPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:0", preview_fps=preview_fps))
    publisher.open(RunInfo("bench", SeriesInfo("bench", (size, size), "<u2"), {"backend": "bench"}, {}))
    endpoint_out.put(publisher.endpoint)
    ready.wait(10)
    start = time.perf_counter()
    index = 0
    while time.perf_counter() - start < seconds:
        template = templates[index % len(templates)]
        frame = dataclasses.replace(template.frame, index=index, timestamp_s=time.time())
        publisher.consume(dataclasses.replace(template, frame=frame, stats=stats if index % 10 == 0 else {},
                                              processed_s=time.time()))
        if index % int(fps) == 0:
            publisher.on_status({"state": "streaming", "camera_fps": fps, "processed_fps": fps})
        index += 1
        time.sleep(max(0.0, start + index / fps - time.perf_counter()))
    sent_out.put((index, publisher.dropped))
    publisher.close()


@benchmark("monitor", "dashboard update ms per display frame (offscreen) against an 80 results/s stream",
           {"seconds": 10.0, "fps": 80.0, "particles": 5, "size": 1024, "preview_fps": 25.0})
def monitor(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from sam4em_live.monitor.subscriber import ResultsSubscriber
    from sam4em_live.monitor.window import MonitorWindow

    seconds, fps = number(params, "seconds"), number(params, "fps")
    ctx = mp.get_context("spawn")
    endpoint_q, sent_q, ready = ctx.Queue(), ctx.Queue(), ctx.Event()
    process = ctx.Process(target=_publisher, args=(endpoint_q, ready, seconds, fps, integer(params, "particles"),
                                                   integer(params, "size"), number(params, "preview_fps"), sent_q))
    process.start()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    subscriber = ResultsSubscriber(endpoint_q.get(timeout=60))
    subscriber.start()
    window = MonitorWindow(subscriber, None, levels=(600.0, 1100.0))
    window.resize(1400, 820)
    window.show()
    update_ms: list[float] = []

    def record() -> None:  # connected after refresh(), so it runs right after each display update
        update_ms.append(window.render_ms)

    window.timer.timeout.connect(record)
    QtCore.QTimer.singleShot(500, ready.set)  # let the SUB socket join first
    QtCore.QTimer.singleShot(int((seconds + 1.5) * 1000), app.quit)
    started = time.perf_counter()
    app.exec()
    elapsed = time.perf_counter() - started
    sent, dropped = sent_q.get(timeout=30)
    process.join(10)
    window.shutdown()
    window.timer.timeout.disconnect(record)
    window.close()
    window.deleteLater()
    app.processEvents()
    for queue in (endpoint_q, sent_q):
        queue.close()
    drawn = np.asarray(update_ms[5:] or [0.0])
    return Measurement({
        "results_sent": count(sent, "results"), "results_received": count(window.model.results_received, "results"),
        "publisher_dropped": count(dropped, "results", "lower"),
        "display_hz": Metric(len(update_ms) / elapsed, "Hz", "higher"),
        "update_ms_mean": Metric(float(drawn.mean()), "ms"), "update_ms_p95": Metric(float(np.percentile(drawn, 95)), "ms"),
        "update_ms_max": Metric(float(drawn.max()), "ms"),
        "monitor_rejected": count(window.model.rejected_total, "results", "lower"),
    })
