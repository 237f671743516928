"""Cost of the live rolling statistics and of the batch analysis functions, on Brownian tracks.

``RollingTrackStats.update`` per frame for ``particles`` particles (window and max lag as the service's
defaults) after the window has filled: wall clock and this thread's CPU time (wall maxima on a loaded
machine are scheduling; the CPU time is the work); ``snapshot()`` of all particles (tMSD + both fits);
one ``fit_msd`` on 10 lags; the batch ``tmsd`` of one ``batch_frames``-frame track (thread CPU time).
The live budget at 80 fps is 12.5 ms per frame for everything.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from tools.bench.figures import distribution, integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def _cpu_us_per_call(function: Callable[[], object], repeats: int) -> float:
    """Thread CPU time per call (wall time on a shared machine mostly measures the other jobs)."""
    start = time.thread_time()
    for _ in range(repeats):
        function()
    return (time.thread_time() - start) / repeats * 1e6


@benchmark("stats", "rolling tMSD update/snapshot per frame, one MSD fit, batch tMSD (thread CPU time)",
           {"particles": 10, "frames": 4000, "window": 1024, "max_lag": 100, "batch_frames": 10000, "seed": 0},
           quick={})
def rolling_stats(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    from sam4em_live.particles import ParticleMeasurement
    from sam4em_live.stats.fit import fit_msd
    from sam4em_live.stats.msd import tmsd
    from sam4em_live.stats.rolling import RollingTrackStats

    particles, frames = integer(params, "particles"), integer(params, "frames")
    window, max_lag = integer(params, "window"), integer(params, "max_lag")
    if frames <= window:
        raise ValueError("frames must exceed window (figures are taken once the window is full)")
    rng = np.random.default_rng(integer(params, "seed"))
    xy = np.cumsum(rng.normal(size=(frames, particles, 2)), axis=0)
    stats = RollingTrackStats(window, max_lag, fps=80.0, pixel_size_nm=1.0)
    wall_us, cpu_us = [], []
    for f in range(frames):
        measured = [ParticleMeasurement(p + 1, f, True, float(xy[f, p, 0]), float(xy[f, p, 1]))
                    for p in range(particles)]
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        stats.update(f, measured)
        wall_us.append((time.perf_counter() - wall0) * 1e6)
        cpu_us.append((time.thread_time() - cpu0) * 1e6)
    metrics: dict[str, Metric] = distribution("update_wall_us", wall_us[window:], "us")
    metrics.update(distribution("update_cpu_us", cpu_us[window:], "us"))
    metrics["snapshot_cpu_us"] = Metric(_cpu_us_per_call(stats.snapshot, 50), "us")
    curve = stats.msd(1).measured()
    metrics["fit_msd_cpu_us"] = Metric(_cpu_us_per_call(lambda: fit_msd(curve.lag_frames, curve.msd, curve.n), 200),
                                       "us")
    n_batch = integer(params, "batch_frames")
    track = np.cumsum(rng.normal(size=(n_batch, 2)), axis=0)
    metrics["batch_tmsd_cpu_ms"] = Metric(
        _cpu_us_per_call(lambda: tmsd(np.arange(n_batch), track[:, 0], track[:, 1], max_lag), 5) / 1e3, "ms")
    return Measurement(metrics)
