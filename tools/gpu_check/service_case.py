"""One end-to-end case: FramePublisher (PUSH) -> service with the sam2 backend -> results (sink + SUB).

The service is assembled by `build_service` as ``serve`` does, with the results publisher on and the
recorder off (disk writes are not the GPU's cost). Frames are sent from a thread either as fast as the
service takes them (``rate`` 0, backpressure ``every-frame``: nothing lost, fps = throughput), with at most
``IN_FLIGHT`` frames sent but not yet through the service, so the latency is the pipeline's and not a queue
growing in ZeroMQ's buffers; or at a camera rate (``latest``: the service drops what it cannot keep up
with, and the report says how many). Latency is the
send timestamp -> result handed to the last sink, after the results publisher.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import zmq

from tools.gpu_check.backend_case import FILL_FRAMES, point_prompts, synthetic_stream
from tools.gpu_check.measure import FrameLog, reset_peak
from tools.gpu_check.plan import Case

SERIES = "gpu-check"
IN_FLIGHT = 2  # rate 0: one frame in the model, one waiting (a camera at exactly the sustainable rate)


class TimingSink:
    """The last sink: latency of every result and memory over time (frames before ``skip`` are warm-up)."""

    def __init__(self, log: FrameLog, skip: int) -> None:
        self.log, self.skip = log, skip
        self.seen = 0
        self.first_measured_s: float | None = None
        self.last_s = 0.0

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        now = time.time()
        self.seen += 1
        if self.seen <= self.skip:
            return
        if self.first_measured_s is None:
            self.first_measured_s = now
        self.last_s = now
        self.log.add((now - result.frame.timestamp_s) * 1e3)

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass


class ResultsCounter:
    """A SUB socket on its own thread counting the results messages a client would receive."""

    def __init__(self, endpoint: str) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self.results = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                parts = self.sock.recv_multipart()
                if parts[0].startswith(b"result"):
                    self.results += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close(linger=0)


def _send(camera: Any, frames: list[Any], count: int, rate: float, stop_at: float, sent: list[int],
          timing: TimingSink) -> None:
    """Publish ``count`` frames (or until ``stop_at``); a refused frame (PUSH at its HWM) is retried, not lost."""
    from sam4em_live.frames import Calibration, SeriesInfo

    camera.send_series_start(SeriesInfo(SERIES, frames[0].shape, frames[0].dtype.str, Calibration(fps=rate or 100.0)))
    t0 = time.perf_counter()
    for i in range(count):
        if time.monotonic() >= stop_at:
            break
        if rate > 0:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        else:
            while i - timing.seen >= IN_FLIGHT and time.monotonic() < stop_at:
                time.sleep(0.0002)
        while True:
            refused = camera.frames_refused
            camera.send_frame(frames[i % len(frames)], SERIES, i, time.time())
            if camera.frames_refused == refused or time.monotonic() >= stop_at:
                break
            time.sleep(0.0005)
        sent[0] = i + 1
    camera.send_series_end(SERIES, sent[0])


def run_service_case(case: Case, device: str, image_size_px: int, frames: int, seconds: float,
                     sample_every: int, rate: float, frame_px: int = 1024,
                     fill_frames: int = FILL_FRAMES) -> dict[str, Any]:
    from sam4em_live.config import ServiceConfig
    from sam4em_live.service.builder import build_service
    from sam4em_live.sources.camera import FramePublisher

    started = time.monotonic()
    reset_peak(device)
    camera = FramePublisher("tcp://127.0.0.1:0", socket_kind="push", sndhwm_frames=8)
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": camera.endpoint, "socket": "pull", "mode": "connect"},
        "segmenter": {"backend": "sam2", "options": case.options(device, image_size_px)},
        "pipeline": {"backpressure": "latest" if rate > 0 else "every-frame", "queue_frames": 4},
        "publisher": {"endpoint": "tcp://127.0.0.1:0"},
        "recorder": {"enabled": False},
        "control": {"enabled": False},
    })
    log = FrameLog(device, sample_every)
    timing = TimingSink(log, skip=1 + fill_frames)
    built = build_service(config, edits=point_prompts(case.particles, frame_px), extra_sinks=[timing],
                          stop_at_series_end=True)
    assert built.publisher is not None
    counter = ResultsCounter(built.publisher.endpoint)
    built.service.start()
    time.sleep(0.3)  # the SUB socket joins the publisher
    total = 1 + fill_frames + frames
    sent = [0]
    sender = threading.Thread(target=_send, args=(camera, synthetic_stream(case.particles, frame_px), total, rate,
                                                  started + seconds, sent, timing), daemon=True)
    send_started = time.time()
    sender.start()
    sender.join()
    finished = built.service.wait(max(30.0, started + seconds + 30.0 - time.monotonic()))
    built.service.stop()
    status = built.service.status()
    time.sleep(0.2)  # the last results reach the SUB socket
    counter.close()
    built.close()
    camera.close()
    if built.service.error is not None:
        raise RuntimeError(f"the service failed: {built.service.error}")
    wall = timing.last_s - (timing.first_measured_s or timing.last_s)
    figures = log.figures(wall)
    # fps over the measured span: the first measured result to the last, frames in between.
    figures["fps"] = (figures["frames"] - 1) / wall if wall > 0 and figures["frames"] > 1 else float("nan")
    return {"case": case.name, "kind": case.kind, "model": case.model, "particles": case.particles,
            "mode": case.mode, "frames_requested": frames, "budget_s": seconds, "rate": rate,
            # first frame sent -> first measured result: the prompt frame, the memory fill (and compiling)
            "warmup_s": (timing.first_measured_s or send_started) - send_started,
            "in_flight": None if rate > 0 else IN_FLIGHT,
            "frames_sent": sent[0], "frames_processed": status.frames_processed,
            "frames_dropped": status.frames_dropped, "results_received": counter.results,
            "service_stopped_at_series_end": bool(finished),
            "cut": figures["frames"] < frames, "random_weights": True, **figures}
