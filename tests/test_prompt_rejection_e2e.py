"""A prompt that cannot be seeded is refused on its own, end to end (issue 16).

Real parts: the service with the embedded backend, a frame source paced like a camera, the control
channel on loopback (ZeroMQ, port 0) and a real client. Several prompts are sent for the same future
frame, two of them on empty background: each of those comes back as a ``prompt_rejected`` event
naming its own particle, and every other particle of that frame starts and is tracked.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from scipy import ndimage

from sam4em_live.config import ServiceConfig
from sam4em_live.control import ControlClient
from sam4em_live.frames import Calibration
from sam4em_live.service.builder import build_service
from tests.paced_source import PacedSource
from tests.test_embedded_seeding import dense_field, prompts_for, render

CAL = Calibration(pixel_size_nm=1.0, fps=50.0)


class ResultLog:
    """A real sink keeping each frame's events and which particles were present on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, int, int | None, str]] = []
        self.present: dict[int, set[int]] = {}

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        with self.lock:
            index = result.frame.index
            self.present[index] = {m.particle for m in result.masks if m.present}
            self.events += [(e.kind, e.frame, e.particle, str(e.detail.get("reason", ""))) for e in result.events]

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def frames_after(self, index: int) -> int:
        with self.lock:
            return sum(f > index for f in self.present)

    def first_with_particles(self) -> int | None:
        """The first frame with a particle present (live, prompts land once seeded: service/seeding.py)."""
        with self.lock:
            return min((f for f, present in self.present.items() if present), default=None)


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_bad_prompts_sent_with_good_ones_are_refused_alone_over_the_control_channel() -> None:
    _, labels = dense_field(seed=11, count=12, shape=(256, 256))
    # The same particles under fresh noise on every frame (a static field, as a camera would see it).
    frames = np.stack([render((labels > 0).astype(float), 2.0, seed) for seed in range(12)])
    far = np.argwhere(ndimage.distance_transform_edt(labels == 0) > 20)
    bad_points = {21: far[0], 22: far[-1]}  # (row, col) on empty background
    config = ServiceConfig.from_mapping({
        "recorder": {"enabled": False},
        "publisher": {"enabled": False},
        "control": {"enabled": True, "endpoint": "tcp://127.0.0.1:0"},
        "pipeline": {"backpressure": "latest", "status_interval_s": 0.2},
        "quotas": {"max_worker_load": 1.0, "max_edits_per_s": 100.0},
    })
    log = ResultLog()
    built = build_service(config, source=PacedSource(frames, 50.0, CAL, "loop"), extra_sinks=[log])
    built.service.start()
    client = ControlClient(built.control.endpoint, timeout_s=3.0)
    try:
        assert wait_for(lambda: client.status()["frames_processed"] > 3)
        target = int(client.status()["frames_processed"]) + 40  # every prompt lands on this one frame
        good = list(range(1, 7))
        for particle in (*good[:3], 21, *good[3:], 22):
            if particle in bad_points:
                row, col = bad_points[particle]
                client.add_prompt(particle, points=[(float(col), float(row))], frame=target)
            else:
                (x, y), = prompts_for(labels == particle, particle)["centre"].points
                client.add_prompt(particle, points=[(x, y)], frame=target)
        assert wait_for(lambda: log.frames_after(log.first_with_particles() or 10**9) > 10, timeout_s=60.0)
        status = client.status()
    finally:
        client.close()
        built.service.stop()
        built.close()
    rejected = [(frame, particle, reason) for kind, frame, particle, reason in log.events if kind == "prompt_rejected"]
    assert sorted(p for _, p, _ in rejected) == [21, 22]
    assert all(f"particle {p} " in reason and "no particle found" in reason for _, p, reason in rejected)
    applied_on = min(f for f in log.present if log.present[f])
    assert applied_on >= target and {f for f, _, _ in rejected} == {applied_on}  # same frame as the good ones
    assert log.present[applied_on] == set(good)
    later = [f for f in log.present if f > applied_on]
    assert len(later) >= 10 and all(log.present[f] == set(good) for f in later)  # tracked, frame after frame
    assert sorted(status["particles"]) == good
