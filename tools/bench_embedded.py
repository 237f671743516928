"""Per-frame cost of the embedded backend: N particles on 1024² uint16 frames, one thread.

Simulates a clip of the ``multi-1024`` preset (4 particles, 1024², uint16), prompts every
particle on frame 0, then times ``EmbeddedSegmenter.track`` alone (no I/O, no measurement)
after a warm-up. Prints a table line per figure and, last, one JSON line:

    python tools/bench_embedded.py --frames 200

BLAS/OpenMP pools are pinned to one thread before numpy loads, so the figure is the cost on
ONE core; the machine may be shared, so read the median, not the best run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from sam4em_live.frames import Frame  # noqa: E402
from sam4em_live.segment.embedded import create  # noqa: E402
from sam4em_live.sim.presets import get_preset  # noqa: E402
from sam4em_live.sim.video import make_prompts, simulate_video  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="multi-1024")
    parser.add_argument("--frames", type=int, default=200, help="frames timed (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=40, help="frames tracked before timing (memory filling)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default="{}", help="JSON options for the embedded backend")
    args = parser.parse_args(argv)

    video = simulate_video(get_preset(args.preset), args.warmup + args.frames, args.seed)
    prompts = make_prompts(video, frames=(0,))
    segmenter = create(json.loads(args.options))
    times_ms: list[float] = []
    present: list[int] = []
    for i, pixels in enumerate(video.frames):
        frame = Frame("bench", i, time.time(), pixels)
        edits = [p for p in prompts if p.frame == i]
        start = time.perf_counter()
        masks = segmenter.track(frame, edits)
        elapsed = (time.perf_counter() - start) * 1e3
        if i >= args.warmup:
            times_ms.append(elapsed)
            present.append(sum(m.present for m in masks))
    t = np.asarray(times_ms)
    particles = len(prompts)
    result = {
        "benchmark": "embedded_track_per_frame",
        "preset": args.preset,
        "shape": list(video.frames.shape[1:]),
        "dtype": str(video.frames.dtype),
        "particles": particles,
        "frames_timed": int(t.size),
        "mean_ms": round(float(t.mean()), 3),
        "median_ms": round(float(np.median(t)), 3),
        "p90_ms": round(float(np.percentile(t, 90)), 3),
        "p99_ms": round(float(np.percentile(t, 99)), 3),
        "max_ms": round(float(t.max()), 3),
        "median_ms_per_particle": round(float(np.median(t)) / max(particles, 1), 3),
        "all_present_fraction": round(float(np.mean(np.asarray(present) == particles)), 4),
        "options": json.loads(args.options),
        "threads": 1,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, load {os.getloadavg()[0]:.2f}",
    }
    print(f"# {particles} particles, {result['shape'][0]}x{result['shape'][1]} {result['dtype']}: "
          f"median {result['median_ms']} ms/frame (p99 {result['p99_ms']} ms), "
          f"{result['median_ms_per_particle']} ms per particle")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
