"""Do badly behaved hooks slow the pipeline? Processed fps with no hooks, the example hooks and bad hooks.

The real service (threshold backend, every-frame backpressure, no publisher, recorder or control) runs
over synthetic frames (dark disks drifting on a noisy bright background) fed from memory as fast as it
takes them, in three cases: no hooks; the shipped example hooks (dry-run adapter); a slow hook (50 ms per
call), one that raises on every call and one that hangs. Processed fps is taken between the first and the
last result (teardown excluded); ``consume_us`` is the HookRunner's own time on the pipeline thread.
Cases are interleaved over ``rounds`` rounds (so drifting load hits every case alike); medians reported.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.figures import integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping

_RELEASE = threading.Event()
_HERE = __name__


class SlowHook:
    def on_result(self, ctx: Any) -> None:
        time.sleep(0.05)


class CrashingHook:
    def on_result(self, ctx: Any) -> None:
        raise RuntimeError("deliberate failure (benchmark)")


class HangingHook:
    def on_result(self, ctx: Any) -> None:
        _RELEASE.wait(60)


CASES: dict[str, list[str]] = {
    "no_hooks": [],
    "example_hooks": ["keep-centred", "stop-when-lost"],
    "bad_hooks": [f"{_HERE}:SlowHook", f"{_HERE}:CrashingHook", f"{_HERE}:HangingHook"],
}


class ArrivalTimes:
    """A sink noting when each result arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        self.times.append(time.perf_counter())

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass


def synthetic_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    frames = np.empty((n, size, size), np.uint16)
    for t in range(n):
        image = np.full((size, size), 100.0)
        for x0, y0 in ((0.3 * size, 0.4 * size), (0.6 * size, 0.6 * size)):
            x, y = x0 + 0.05 * t, y0 + 0.03 * t
            image[(cols - x) ** 2 + (rows - y) ** 2 <= 8**2] = 60.0
        frames[t] = np.clip(image + rng.normal(0, 4, image.shape), 0, 65535)
    return frames


def _run_case(frames: np.ndarray, hooks: list[str]) -> dict[str, float]:
    from sam4em_live.config import ServiceConfig
    from sam4em_live.frames import Calibration
    from sam4em_live.particles import Prompt
    from sam4em_live.service.builder import build_service
    from sam4em_live.sources.array_source import ArraySource

    size = frames.shape[1]
    config = ServiceConfig.from_mapping({
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False}, "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"},
        "hooks": {"hooks": [{"target": h} for h in hooks], "hang_timeout_s": 0.5},
    })
    prompts = [Prompt(1, 0, ((0.3 * size, 0.4 * size),), (1,)), Prompt(2, 0, ((0.6 * size, 0.6 * size),), (1,))]
    arrivals = ArrivalTimes()
    built = build_service(config, source=ArraySource(frames, Calibration(pixel_size_nm=2.0, fps=80.0)),
                          edits=prompts, extra_sinks=[arrivals])
    consume_s: list[float] = []
    runner = getattr(built, "hooks", None)
    if runner is not None:
        inner = runner.consume

        def timed(result: Any) -> None:
            t0 = time.perf_counter()
            inner(result)
            consume_s.append(time.perf_counter() - t0)

        runner.consume = timed  # the runner's own cost on the pipeline thread
    built.service.run()
    built.close()
    t = arrivals.times
    return {"fps": (len(t) - 1) / (t[-1] - t[0]),
            "consume_us_p99": float(np.percentile(consume_s, 99) * 1e6) if consume_s else 0.0}


@benchmark("hooks", "processed fps with no hooks, the example hooks, and slow/crashing/hanging hooks",
           {"frames": 600, "size": 512, "rounds": 3})
def hooks(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    frames = synthetic_frames(integer(params, "frames"), integer(params, "size"))
    logging.basicConfig(level=logging.CRITICAL)  # the crashing hook's tracebacks are expected
    _run_case(frames[:100], [])  # warm-up: imports, allocator, caches
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    try:
        for _ in range(integer(params, "rounds")):
            for name, targets in CASES.items():
                runs[name].append(_run_case(frames, targets))
    finally:
        _RELEASE.set()
    metrics: dict[str, Metric] = {}
    for name, results in runs.items():
        metrics[f"{name}_fps"] = Metric(float(np.median([r["fps"] for r in results])), "frames/s", "higher")
        metrics[f"{name}_consume_us_p99"] = Metric(float(np.median([r["consume_us_p99"] for r in results])), "us")
    metrics["bad_over_none"] = Metric(metrics["bad_hooks_fps"].value / metrics["no_hooks_fps"].value, "ratio",
                                      "higher")
    return Measurement(metrics)
