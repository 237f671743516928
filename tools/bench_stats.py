"""Cost of the live rolling statistics and of the batch analysis functions.

Measures, on Brownian tracks:

- ``RollingTrackStats.update`` per frame with ``--particles`` particles
  (window 1024 frames, max lag 100, the service defaults), after the window has
  filled: median, p99 and max in microseconds per frame (all particles), wall
  clock and this thread's CPU time (wall maxima on a loaded machine are
  scheduling, the CPU time is the work);
- ``snapshot()`` of all particles (tMSD + both fits per particle);
- one ``fit_msd`` on 10 lags; the batch ``tmsd`` of one 10 000-frame track to lag 100
  (these three as thread CPU time).

The live budget at 80 fps is 12.5 ms per frame for everything. Prints one line
per figure and a final JSON line.

    python tools/bench_stats.py [--particles 10] [--frames 4000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sam4em_live.particles import ParticleMeasurement
from sam4em_live.stats.fit import fit_msd
from sam4em_live.stats.msd import tmsd
from sam4em_live.stats.rolling import RollingTrackStats


def _per_call_us(fn, repeats: int) -> float:
    """Thread CPU time per call (wall time on a shared machine mostly measures the other jobs)."""
    start = time.thread_time()
    for _ in range(repeats):
        fn()
    return (time.thread_time() - start) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=10)
    parser.add_argument("--frames", type=int, default=4000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    window, max_lag = 1024, 100
    xy = np.cumsum(rng.normal(size=(args.frames, args.particles, 2)), axis=0)
    stats = RollingTrackStats(window, max_lag, fps=80.0, pixel_size_nm=1.0)
    update_us, update_cpu_us = [], []
    for f in range(args.frames):
        ms = [ParticleMeasurement(p + 1, f, True, float(xy[f, p, 0]), float(xy[f, p, 1]))
              for p in range(args.particles)]
        cpu0, start = time.thread_time(), time.perf_counter()
        stats.update(f, ms)
        update_us.append((time.perf_counter() - start) * 1e6)
        update_cpu_us.append((time.thread_time() - cpu0) * 1e6)
    steady = np.array(update_us[window:])
    steady_cpu = np.array(update_cpu_us[window:])
    snapshot_us = _per_call_us(stats.snapshot, 50)
    m = stats.msd(1).measured()
    fit_us = _per_call_us(lambda: fit_msd(m.lag_frames, m.msd, m.n), 200)
    long = np.cumsum(rng.normal(size=(10_000, 2)), axis=0)
    tmsd_ms = _per_call_us(lambda: tmsd(np.arange(10_000), long[:, 0], long[:, 1], max_lag), 5) / 1e3
    result = {
        "particles": args.particles, "window_frames": window, "max_lag_frames": max_lag,
        "update_us_median": float(np.median(steady)), "update_us_p99": float(np.percentile(steady, 99)),
        "update_us_max": float(steady.max()), "update_cpu_us_p99": float(np.percentile(steady_cpu, 99)),
        "update_cpu_us_max": float(steady_cpu.max()), "snapshot_us": snapshot_us, "fit_us": fit_us,
        "batch_tmsd_10k_frames_ms": tmsd_ms,
    }
    print(f"update ({args.particles} particles/frame): median {result['update_us_median']:.0f} µs, "
          f"p99 {result['update_us_p99']:.0f} µs, max {result['update_us_max']:.0f} µs wall; "
          f"thread CPU p99 {result['update_cpu_us_p99']:.0f} µs, max {result['update_cpu_us_max']:.0f} µs")
    print(f"snapshot (all particles, with fits): {snapshot_us:.0f} µs")
    print(f"fit_msd on {m.lag_frames.size and min(10, m.lag_frames.size)} lags: {fit_us:.0f} µs")
    print(f"batch tmsd, 10 000 frames to lag {max_lag}: {tmsd_ms:.1f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
