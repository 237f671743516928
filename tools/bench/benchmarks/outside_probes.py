"""What the worker does after segmentation, with N particles: the per-mask reference against the fast paths.

Issue 23 (many particles): measurement, statistics, events and publishing run on the worker thread for every
frame. This probe replays disc masks of the particle-scaling clips (`particle_clips`: N discs of radius 14 px
on a grid, each on its own random walk; the masks are the true discs, as the embedded backend draws them)
through both sides frame by frame, interleaved in one process so the machine's load falls on both alike:

- ``reference``: `measure_mask` mask by mask (the processor's loop before `measure_masks`), and the
  published masks run-length encoded one by one (`rle_encode`, as `result_message` did before `rle_encode_many`);
- ``fast``: `measure_masks` and `rle_encode_many` (what the service runs).

Both sides then run their own `RollingTrackStats` (update, and the processor's snapshot turns: at most
`MAX_SNAPSHOTS_PER_FRAME` a frame), `EventDetector` and `ResultsPublisher` (a real PUB socket on port 0). The
outputs of both are compared (measurements and statistics equal, or the probe fails). The events stage is
the same code on both sides: its ratio shows the probe's noise. Thread CPU per frame
(`time.thread_time`), after ``warmup`` frames (statistics window filling); garbage collection runs between
frames, untimed (in a stage it falls on whichever side made the 700th container).

    python -m tools.bench.benchmarks.outside_probes PARTICLES [PARTICLES ...] [--frames N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.benchmarks.particle_clips import particle_clip

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

STAGES = ("measure", "stats_update", "stats_snapshot", "events", "publish")
RADIUS_PX = 14.0


def disc_masks(centres: np.ndarray, radius_px: float = RADIUS_PX) -> list[Any]:
    """One frame's `ParticleMask` per particle: the disc of ``radius_px`` around each (row, column) centre."""
    from sam4em_live.particles import ParticleMask

    reach = int(np.ceil(radius_px)) + 1
    masks = []
    for pid, (y, x) in enumerate(centres, start=1):
        y0, x0 = int(round(y)) - reach, int(round(x)) - reach
        rows, cols = np.mgrid[y0:y0 + 2 * reach + 1, x0:x0 + 2 * reach + 1]
        crop = (rows - y) ** 2 + (cols - x) ** 2 <= radius_px**2
        masks.append(ParticleMask(pid, True, 0.9, (x0, y0, x0 + crop.shape[1], y0 + crop.shape[0]), crop))
    return masks


class _Side:
    """One side's worker stages after segmentation (its own statistics, events and publisher)."""

    def __init__(self, measure: Callable[[Sequence[Any], int], tuple[Any, ...]], shape: tuple[int, int],
                 reference: bool = False) -> None:
        from sam4em_live.config import PublisherConfig
        from sam4em_live.frames import Calibration, SeriesInfo
        from sam4em_live.hooks.events import EventDetector
        from sam4em_live.results import RunInfo
        from sam4em_live.sinks.publisher import ResultsPublisher
        from sam4em_live.stats.rolling import RollingTrackStats

        self.calibration = Calibration(fps=200.0, pixel_size_nm=1.0)
        self.measure = measure
        self.reference = reference
        self.stats = RollingTrackStats(1024, 100, 200.0, 1.0)
        self.events = EventDetector()
        # Previews off (one every 1000 s): they go by wall time, so each side would send a different number.
        self.publisher = ResultsPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:0", preview_fps=0.001))
        self.publisher.open(RunInfo("probe", SeriesInfo("probe", shape, "<u2", self.calibration),
                                    {"backend": "embedded"}, {}, {}))
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.outputs: list[Any] = []

    def frame(self, index: int, pixels: np.ndarray, masks: list[Any], counted: bool) -> None:
        from sam4em_live.frames import Frame
        from sam4em_live.results import FrameResult
        from sam4em_live.service.processor import MAX_SNAPSHOTS_PER_FRAME
        from sam4em_live.sinks import results_schema as schema

        clock = time.thread_time
        t0 = clock()
        measured = self.measure(masks, index)
        t1 = clock()
        self.stats.update(index, measured)
        t2 = clock()
        cycle = max(10, -(-len(masks) // MAX_SNAPSHOTS_PER_FRAME))  # the processor's turns
        snapshot: dict[int, Any] = {}
        for j, pid in enumerate(self.stats.particles()):
            if (j * cycle) // len(masks) == index % cycle:
                snapshot.update(self.stats.snapshot(pid))
        t3 = clock()
        found = self.events.update(index, pixels.shape, measured, None, snapshot)
        t4 = clock()
        frame = Frame("probe", index, 1000.0 + index / 200.0, pixels, self.calibration)
        result = FrameResult(frame, tuple(masks), measured, snapshot, tuple(found), {}, 0.0)
        encode_many = schema.rle_encode_many
        if self.reference:
            schema.rle_encode_many = _one_by_one
        try:
            t4b = clock()  # the result's records are not timed: the service builds them in every case
            self.publisher.consume(result)
            t5 = clock()
        finally:
            schema.rle_encode_many = encode_many
        if counted:
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4b), strict=True):
                self.seconds[stage] += seconds
            self.outputs.append((measured, snapshot))


def compare(particles: int, frames: int = 400, warmup: int = 100, profile: bool = False) -> str:
    """Both sides on ``frames`` frames of ``particles`` discs (1024²), interleaved; a report."""
    from sam4em_live.measure import measure_mask, measure_masks

    clip, centres = particle_clip(1024, particles, 16)
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])  # ping-pong, as the sender
    walk = centres[order]
    masks = [disc_masks(walk[i]) for i in range(len(walk))]

    def reference(frame_masks: Sequence[Any], index: int) -> tuple[Any, ...]:
        return tuple(measure_mask(m, index) for m in frame_masks)

    sides = {"reference": _Side(reference, clip.shape[1:], reference=True), "fast": _Side(measure_masks, clip.shape[1:])}
    profiler = cProfile.Profile() if profile else None
    # Garbage collection off while timing, a young-generation collection between frames: a collection
    # otherwise lands in whichever stage makes the 700th container, whichever side's objects it walks.
    gc.disable()
    try:
        for i in range(frames):
            gc.collect(0)
            step = i % len(walk)
            # The walk repeats every len(walk) frames; shift it so that positions keep moving (statistics).
            shifted = [_shifted(m, i // len(walk)) for m in masks[step]]
            pixels = clip[order[step]]
            for name in (("reference", "fast") if i % 2 else ("fast", "reference")):  # alternate who goes first
                if profiler is not None and name == "fast" and i >= warmup:
                    profiler.enable()
                sides[name].frame(i, pixels, shifted, i >= warmup)
                if profiler is not None:
                    profiler.disable()
    finally:
        gc.enable()
    for side in sides.values():
        side.publisher.close()
    if sides["reference"].outputs != sides["fast"].outputs:
        raise AssertionError("the fast side's measurements or statistics differ from the reference's")
    counted = frames - warmup
    ref, fast = sides["reference"].seconds, sides["fast"].seconds
    lines = [f"{particles} particles, 1024², {counted} frames after {warmup}; thread CPU ms per frame "
             "(reference / fast / ratio); outputs equal"]
    for stage in (*STAGES, "total"):
        a = sum(ref.values()) if stage == "total" else ref[stage]
        b = sum(fast.values()) if stage == "total" else fast[stage]
        lines.append(f"  {stage:15s} {1e3 * a / counted:7.3f} {1e3 * b / counted:7.3f} {b / a if a else float('nan'):6.2f}")
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        lines.append(out.getvalue())
    return "\n".join(lines)


def _one_by_one(crops: Sequence[np.ndarray]) -> list[list[int]]:
    from sam4em_live.sinks.results_schema import rle_encode

    return [rle_encode(crop) for crop in crops]


def _shifted(mask: Any, laps: int) -> Any:
    """The mask moved ``laps`` pixels right and down (a new lap of the ping-pong walk drifts on)."""
    if laps == 0:
        return mask
    x0, y0, x1, y1 = mask.bbox
    return type(mask)(mask.particle, True, mask.score, (x0 + laps, y0 + laps, x1 + laps, y1 + laps), mask.crop)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("particles", type=int, nargs="+")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="cProfile of the fast side")
    parser.add_argument("--keep-heap", action="store_true",
                        help="glibc: never trim the heap nor mmap blocks under 32 MiB (page faults of large temporaries)")
    args = parser.parse_args(argv)
    if args.keep_heap:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    with open("/proc/loadavg") as f:
        print("load", f.read().split()[:3])
    for n in args.particles:
        print(compare(n, args.frames, args.warmup, args.profile))
    with open("/proc/loadavg") as f:
        print("load", f.read().split()[:3])


if __name__ == "__main__":
    main()
