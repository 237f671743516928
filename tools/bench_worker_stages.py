"""Per-frame cost of the worker-thread stages after segmentation: measure, stats, events, publish, record.

The embedded backend segments a short simulated clip once (preset
`multi-1024`: 1024x1024 uint16, 4 particles; not timed); its masks are then
replayed, cycling over the clip with increasing frame indices, through
`measure_mask`, `RollingTrackStats.update` (+ `snapshot` every 10 frames, as
the service does), `EventDetector.update`, `ResultsPublisher.consume` (real
PUB socket) and `Recorder.consume`. The recorder's writer-thread work per
result (CSV rows, mask crops to the masks.tif child) is timed separately, run
synchronously. Times are CPU time of the calling thread (``time.thread_time``),
so other load on the machine inflates them less than wall time; the first
``--warmup-frames`` (statistics window filling) are not counted.

Prints one line per stage (ms per frame) and a final JSON line.

    python tools/bench_worker_stages.py [--frames 2000] [--clip 150] [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.particles import ParticleMask

WORKER_STAGES = ("measure", "stats_update", "stats_snapshot", "events", "publish", "record_consume")


def _segmented_clip(clip: int, seed: int) -> tuple[np.ndarray, list[tuple[ParticleMask, ...]]]:
    from sam4em_live.segment.base import track_with_retries
    from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.video import make_prompts, simulate_video

    video = simulate_video(get_preset("multi-1024"), clip, seed)
    prompts = make_prompts(video, frames=(0,), kind="point")
    frames = np.ascontiguousarray(video.frames)
    segmenter = EmbeddedSegmenter()
    masks = []
    for i in range(clip):
        frame = Frame("bench", i, 0.0, frames[i], Calibration())
        found, _ = track_with_retries(segmenter, frame, prompts if i == 0 else [])
        masks.append(tuple(found))
    return frames, masks


def _one_pass(frames: np.ndarray, masks: list, n: int, warmup: int, calibration: Calibration) -> dict[str, float]:
    from sam4em_live.config import PublisherConfig
    from sam4em_live.hooks.events import EventDetector
    from sam4em_live.measure import measure_mask
    from sam4em_live.results import FrameResult, RunInfo
    from sam4em_live.sinks.publisher import ResultsPublisher
    from sam4em_live.stats.rolling import RollingTrackStats

    series = SeriesInfo("bench", frames.shape[1:], frames.dtype.str, calibration)
    run = RunInfo("bench", series, {"backend": "embedded", "random_weights": False}, {}, {})
    stats = RollingTrackStats(1024, 100, calibration.fps, calibration.pixel_size_nm)
    events = EventDetector()
    publisher = ResultsPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:0"))
    publisher.open(run)
    totals = dict.fromkeys(WORKER_STAGES, 0.0)
    results = []
    clock = time.thread_time
    for k in range(n):
        frame = Frame("bench", k, 1000.0 + k / calibration.fps, frames[k % len(masks)], calibration)
        crops = masks[k % len(masks)]
        t0 = clock()
        measured = tuple(measure_mask(m, k, frame.pixels) for m in crops)
        t1 = clock()
        stats.update(k, measured)
        t2 = clock()
        snapshot = stats.snapshot() if k % 10 == 0 else {}
        t3 = clock()
        found = events.update(k, frame.shape, measured, None, snapshot)
        t4 = clock()
        result = FrameResult(frame, crops, measured, snapshot, tuple(found), {}, time.time())
        publisher.consume(result)
        t5 = clock()
        if k >= warmup:
            for stage, dt in zip(WORKER_STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=False):
                totals[stage] += dt
            results.append(result)
    publisher.close()
    totals.update(_record_costs(run, results))
    return {stage: seconds / len(results) * 1e3 for stage, seconds in totals.items()}


def _record_costs(run: Any, results: list) -> dict[str, float]:
    from sam4em_live.sinks.recorder import Recorder
    from sam4em_live.sinks.recorder.messages import ResultMessage

    clock = time.thread_time
    with tempfile.TemporaryDirectory() as out:
        recorder = Recorder(out, write_masks=True, queue_frames=len(results) + 1)
        recorder.open(run)
        t0 = clock()
        for result in results:
            recorder.consume(result)
        consume = clock() - t0
        recorder.close()
    with tempfile.TemporaryDirectory() as out:
        writer = Recorder(out, write_masks=True)
        writer.open(run)
        t0 = clock()
        for r in results:  # the writer thread's work, run here so that its CPU time can be read
            message = ResultMessage(r.index, r.frame.timestamp_s, 0.0, r.measurements, r.masks, ())
            writer._run_writer.write_result(message)
        written = clock() - t0
        writer.close()
    return {"record_consume": consume, "writer_thread_per_result": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--clip", type=int, default=150, help="frames segmented (then cycled)")
    parser.add_argument("--warmup-frames", type=int, default=1100, help="not counted (stats window filling)")
    parser.add_argument("--passes", type=int, default=3, help="the median over passes is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.frames <= args.warmup_frames:
        parser.error("--frames must exceed --warmup-frames")
    frames, masks = _segmented_clip(args.clip, args.seed)
    calibration = Calibration(fps=200.0, pixel_size_nm=1.0)
    passes = [_one_pass(frames, masks, args.frames, args.warmup_frames, calibration) for _ in range(args.passes)]
    median = {stage: round(float(np.median([p[stage] for p in passes])), 4) for stage in passes[0]}
    median["worker_total"] = round(sum(median[s] for s in WORKER_STAGES), 4)
    for stage, ms in median.items():
        print(f"{stage:>26s}: {ms:.4f} ms/frame")
    print(json.dumps({"benchmark": "worker_stages", "preset": "multi-1024", "particles": len(masks[0]),
                      "frames_timed": args.frames - args.warmup_frames, "passes": args.passes,
                      "clock": "thread_time", "ms_per_frame": median}))


if __name__ == "__main__":
    main()
