"""Monitor display cost: GUI update time per display frame, offscreen, against a full-rate results stream.

A separate process publishes results like the service does (`ResultsPublisher`:
1024x1024 frames, N particles with masks, rolling stats every 10 frames,
decimated preview at --preview-fps) at --fps. The dashboard runs offscreen in
this process at its normal ~25 Hz timer. Reported: time spent in each display
update (take + fold in + draw calls; Qt's own painting happens after, in the
event loop, and is reflected in the achieved display rate), the achieved
display rate, how many results the monitor received versus were sent, and the
publisher's drop count for us. Prints a final JSON line.

    QT_QPA_PLATFORM=offscreen python tools/bench_monitor.py [--seconds 10] [--fps 80] [--particles 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import time

import numpy as np


def _results(n_particles: int, size: int, n_distinct: int = 8):
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
            x, y = 100 + 150 * pid + 3 * k, 200 + 100 * pid + 2 * k
            disk = (cols - x) ** 2 + (rows - y) ** 2 <= 20**2
            pixels[disk] = 700
            masks.append(ParticleMask.from_full(pid, disk, 0.9))
        frame = Frame("bench", k, 0.0, pixels.astype(np.uint16), Calibration(pixel_size_nm=1.0, fps=80.0))
        out.append(FrameResult(frame, tuple(masks), tuple(measure_mask(m, k) for m in masks)))
    return out


def _stats(n_particles: int) -> dict:
    from sam4em_live.results import ParticleStatistics

    lags = tuple(range(1, 101))
    record = ParticleStatistics(lag_frames=lags, lag_s=tuple(lag / 80 for lag in lags),
                                msd_px2=tuple(0.5 * lag for lag in lags), msd_nm2=tuple(0.5 * lag for lag in lags),
                                n=tuple(1000 - lag for lag in lags), fit_lags=10, window_frames=1000,
                                frames_seen=1000, frames_in_window=1000, alpha=1.0)
    return dict.fromkeys(range(1, n_particles + 1), record)


def _publisher(endpoint_out, ready, seconds: float, fps: float, n_particles: int, size: int,
               preview_fps: float, sent_out) -> None:
    from sam4em_live.config import PublisherConfig
    from sam4em_live.frames import SeriesInfo
    from sam4em_live.results import RunInfo
    from sam4em_live.sinks.publisher import ResultsPublisher

    templates = _results(n_particles, size)
    stats = _stats(n_particles)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=80.0)
    parser.add_argument("--particles", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--preview-fps", type=float, default=25.0)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from sam4em_live.monitor.subscriber import ResultsSubscriber
    from sam4em_live.monitor.window import MonitorWindow

    ctx = mp.get_context("spawn")
    endpoint_q, sent_q, ready = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_publisher, args=(endpoint_q, ready, args.seconds, args.fps, args.particles,
                                                args.size, args.preview_fps, sent_q))
    proc.start()
    endpoint = endpoint_q.get(timeout=60)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    subscriber = ResultsSubscriber(endpoint)
    subscriber.start()
    window = MonitorWindow(subscriber, None, levels=(600.0, 1100.0))
    window.resize(1400, 820)
    window.show()
    update_ms: list[float] = []

    def record() -> None:  # connected after refresh(), so it runs right after each display update
        update_ms.append(window.render_ms)

    window.timer.timeout.connect(record)
    QtCore.QTimer.singleShot(500, ready.set)  # let the SUB socket join first
    QtCore.QTimer.singleShot(int((args.seconds + 1.5) * 1000), app.quit)
    started = time.perf_counter()
    app.exec()
    elapsed = time.perf_counter() - started
    sent, dropped = sent_q.get(timeout=30)
    proc.join(10)
    window.shutdown()
    window.timer.timeout.disconnect(record)
    window.close()
    window.deleteLater()
    app.processEvents()
    for queue in (endpoint_q, sent_q):
        queue.close()
    drawn_ms = np.asarray(update_ms[5:] or [0.0])
    figures = {
        "bench": "monitor", "frame_px": args.size, "particles": args.particles, "stream_fps": args.fps,
        "results_sent": sent, "results_received": window.model.results_received, "publisher_dropped": dropped,
        "display_updates": len(update_ms), "display_hz": round(len(update_ms) / elapsed, 1),
        "update_ms_mean": round(float(drawn_ms.mean()), 2), "update_ms_p95": round(float(np.percentile(drawn_ms, 95)), 2),
        "update_ms_max": round(float(drawn_ms.max()), 2), "monitor_rejected": window.model.rejected_total,
    }
    print(f"results: sent {sent}, received by the monitor {figures['results_received']}, publisher dropped {dropped}")
    print(f"display: {figures['display_updates']} updates at {figures['display_hz']} Hz; update "
          f"mean {figures['update_ms_mean']} ms, p95 {figures['update_ms_p95']} ms, max {figures['update_ms_max']} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
