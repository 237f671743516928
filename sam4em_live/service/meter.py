"""Counts, rates and latency percentiles over one status interval (the service's status line)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sam4em_live.results import FrameResult


class IntervalMeter:
    """Counts and latencies over the current status interval (worker thread + ingest counter)."""

    def __init__(self) -> None:
        self.received_total = 0
        self._received_at_roll = 0
        self._processed = 0
        self._latencies: list[float] = []
        self._stage_sums: dict[str, float] = {}
        self._waited_s = 0.0  # worker time spent waiting for a frame (the rest of the interval it was busy)
        self._t0 = time.monotonic()

    def waited(self, seconds: float) -> None:
        """Add worker time spent waiting for a frame to arrive."""
        self._waited_s += seconds

    def record(self, result: FrameResult, latency_s: float) -> None:
        self._processed += 1
        self._latencies.append(latency_s * 1e3)
        for stage, ms in result.timings_ms.items():
            self._stage_sums[stage] = self._stage_sums.get(stage, 0.0) + ms

    def roll(self) -> dict[str, Any]:
        now = time.monotonic()
        dt = max(now - self._t0, 1e-9)
        total = self.received_total
        received, self._received_at_roll = total - self._received_at_roll, total
        lat = np.asarray(self._latencies) if self._latencies else np.zeros(1)
        n = max(self._processed, 1)
        out = {
            "camera_fps": received / dt, "processed_fps": self._processed / dt,
            "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99)),
            "latency_ms_max": float(lat.max()), "stage_ms": {k: v / n for k, v in self._stage_sums.items()},
            "worker_busy": min(max(1.0 - self._waited_s / dt, 0.0), 1.0),
        }
        self._processed, self._latencies, self._stage_sums, self._t0 = 0, [], {}, now
        self._waited_s = 0.0
        return out
