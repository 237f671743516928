"""Do badly behaved hooks slow the pipeline? Processed fps with no hooks, good hooks and bad hooks.

Runs the real service (threshold backend, every-frame backpressure, no
publisher or recorder) over synthetic frames (dark disks drifting on a noisy
bright background) fed from memory as fast as the pipeline takes them, three
times: without hooks; with the shipped example hooks (dry-run adapter); with a
slow hook (50 ms per call), a hook that raises on every call and one that
hangs. Processed fps is measured between the first and the last result
(teardown excluded); ``consume_us_p99`` is the HookRunner's own cost per frame.

Cases are interleaved over ``--rounds`` rounds and medians reported. Prints
one line per case and a final JSON line.

    python tools/bench_hooks.py [--frames 600] [--size 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import numpy as np

from sam4em_live.config import ServiceConfig
from sam4em_live.frames import Calibration
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sources.array_source import ArraySource

CAL = Calibration(pixel_size_nm=2.0, fps=80.0)
_RELEASE = threading.Event()


class SlowHook:
    def on_result(self, ctx: Any) -> None:
        time.sleep(0.05)


class CrashingHook:
    def on_result(self, ctx: Any) -> None:
        raise RuntimeError("deliberate failure (benchmark)")


class HangingHook:
    def on_result(self, ctx: Any) -> None:
        _RELEASE.wait(60)


class Timing:
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


def make_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    frames = np.empty((n, size, size), np.uint16)
    for t in range(n):
        img = np.full((size, size), 100.0)
        for x0, y0 in ((0.3 * size, 0.4 * size), (0.6 * size, 0.6 * size)):
            x, y = x0 + 0.05 * t, y0 + 0.03 * t
            img[(cols - x) ** 2 + (rows - y) ** 2 <= 8**2] = 60.0
        frames[t] = np.clip(img + rng.normal(0, 4, img.shape), 0, 65535)
    return frames


def run_case(frames: np.ndarray, hooks: list[str]) -> dict[str, float]:
    size = frames.shape[1]
    cfg = ServiceConfig.from_mapping({
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False}, "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"},
        "hooks": {"hooks": [{"target": h} for h in hooks], "hang_timeout_s": 0.5},
    })
    prompts = [Prompt(1, 0, ((0.3 * size, 0.4 * size),), (1,)), Prompt(2, 0, ((0.6 * size, 0.6 * size),), (1,))]
    timing = Timing()
    built = build_service(cfg, source=ArraySource(frames, CAL), edits=prompts, extra_sinks=[timing])
    consume_s: list[float] = []
    if built.hooks is not None:
        inner = built.hooks.consume

        def timed(result: Any) -> None:
            t0 = time.perf_counter()
            inner(result)
            consume_s.append(time.perf_counter() - t0)

        built.hooks.consume = timed  # measure the runner's own cost on the pipeline thread
    built.service.run()
    built.close()
    t = timing.times
    return {
        "frames": len(t),
        "fps": (len(t) - 1) / (t[-1] - t[0]),
        "consume_us_p99": float(np.percentile(consume_s, 99) * 1e6) if consume_s else 0.0,
        "consume_us_max": float(max(consume_s) * 1e6) if consume_s else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all cases; medians reported")
    args = parser.parse_args()
    frames = make_frames(args.frames, args.size)
    cases = {
        "no_hooks": [],
        "example_hooks": ["keep-centred", "stop-when-lost"],
        "bad_hooks": ["__main__:SlowHook", "__main__:CrashingHook", "__main__:HangingHook"],
    }
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # the crashing hook's tracebacks are expected
    run_case(frames[:100], [])  # warm-up: imports, allocator, caches
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):  # interleaved so drifting machine load hits every case alike
        for name, hooks in cases.items():
            rounds[name].append(run_case(frames, hooks))
    results = {name: {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
               for name, runs in rounds.items()}
    for name, r in results.items():
        print(f"{name:14s} {r['frames']:.0f} frames  {r['fps']:7.1f} fps (median of {args.rounds})  "
              f"consume p99 {r['consume_us_p99']:6.1f} us  max {r['consume_us_max']:7.1f} us")
    _RELEASE.set()
    ratio = results["bad_hooks"]["fps"] / results["no_hooks"]["fps"]
    print(json.dumps({"frames": args.frames, "size_px": args.size, "rounds": args.rounds, **{k: round(v["fps"], 1) for k, v in
                      results.items()}, "bad_over_none": round(ratio, 3),
                      "bad_consume_us_p99": round(results["bad_hooks"]["consume_us_p99"], 1)}))


if __name__ == "__main__":
    main()
