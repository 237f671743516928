"""Per-frame CPU cost of the worker-thread stages after segmentation: measure, stats, events, publish, record.

The embedded backend segments a cached simulated clip once (``multi-1024``: 1024² uint16, 4 particles;
not timed); its masks are then replayed, cycling over the clip with increasing frame indices, through
``measure_mask``, ``RollingTrackStats.update`` (+ ``snapshot`` every 10th frame, as the service does),
``EventDetector.update``, ``ResultsPublisher.consume`` (a real PUB socket) and ``Recorder.consume``. Times
are CPU time of the calling thread (``time.thread_time``): other load inflates them less than wall time.
The first ``warmup_frames`` (statistics window filling) are not counted; the median over ``passes`` is
reported. ``recorder_writer_cpu_ms`` is the recorder's background work per result: the process CPU time
from the first ``consume`` to the end of ``close`` minus this thread's (the child process writing
``masks.tif`` is not included).
"""

from __future__ import annotations

import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.data import simulated_clip
from tools.bench.figures import integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping

STAGES = ("measure", "stats_update", "stats_snapshot", "events", "publish")


def _segmented(clip: Any) -> list[tuple[Any, ...]]:
    from sam4em_live.frames import Frame
    from sam4em_live.segment.registry import create_segmenter

    prompts = clip.prompts((0,), "point")
    segmenter = create_segmenter("embedded", {})
    try:
        return [tuple(segmenter.track(Frame("bench", i, 0.0, pixels), prompts if i == 0 else []))
                for i, pixels in enumerate(clip.pixels)]
    finally:
        segmenter.close()


def _one_pass(frames: np.ndarray, masks: list[tuple[Any, ...]], n: int, warmup: int) -> dict[str, float]:
    from sam4em_live.config import PublisherConfig
    from sam4em_live.frames import Calibration, Frame, SeriesInfo
    from sam4em_live.hooks.events import EventDetector
    from sam4em_live.measure import measure_mask
    from sam4em_live.results import FrameResult, RunInfo
    from sam4em_live.sinks.publisher import ResultsPublisher
    from sam4em_live.stats.rolling import RollingTrackStats

    fps = 200.0
    calibration = Calibration(fps=fps, pixel_size_nm=1.0)
    run = RunInfo("bench", SeriesInfo("bench", frames.shape[1:], frames.dtype.str, calibration),
                  {"backend": "embedded", "random_weights": False}, {}, {})
    stats = RollingTrackStats(1024, 100, fps, 1.0)
    events = EventDetector()
    publisher = ResultsPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:0"))
    publisher.open(run)
    totals = dict.fromkeys(STAGES, 0.0)
    kept = []
    clock = time.thread_time
    for k in range(n):
        frame = Frame("bench", k, 1000.0 + k / fps, frames[k % len(masks)], calibration)
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
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                totals[stage] += seconds
            kept.append(result)
    publisher.close()
    per_frame = {stage: seconds / len(kept) * 1e3 for stage, seconds in totals.items()}
    per_frame.update(_recorder_costs(run, kept))
    return per_frame


def _recorder_costs(run: Any, results: list[Any]) -> dict[str, float]:
    from sam4em_live.sinks.recorder import Recorder

    with tempfile.TemporaryDirectory() as out:
        recorder = Recorder(out, write_masks=True, queue_frames=len(results) + 1)
        recorder.open(run)
        thread0, process0 = time.thread_time(), time.process_time()
        for result in results:
            recorder.consume(result)
        consume = time.thread_time() - thread0
        recorder.close()
        background = (time.process_time() - process0) - (time.thread_time() - thread0)
    return {"record_consume": consume / len(results) * 1e3, "recorder_writer": background / len(results) * 1e3}


@benchmark("worker-stages", "worker-thread CPU per frame after segmentation: measure, stats, events, publish, record",
           {"clip": 150, "frames": 2000, "warmup_frames": 1100, "passes": 3, "seed": 0},
           quick={"frames": 1400, "passes": 2})
def worker_stages(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    n, warmup = integer(params, "frames"), integer(params, "warmup_frames")
    if n <= warmup:
        raise ValueError("frames must exceed warmup_frames")
    clip = simulated_clip(context.cache, "multi-1024", integer(params, "clip"), integer(params, "seed"))
    masks = _segmented(clip)
    passes = [_one_pass(clip.pixels, masks, n, warmup) for _ in range(integer(params, "passes"))]
    median = {stage: float(np.median([p[stage] for p in passes])) for stage in passes[0]}
    metrics = {f"{stage}_cpu_ms": Metric(ms, "ms") for stage, ms in median.items()}
    metrics["worker_total_cpu_ms"] = Metric(sum(median[s] for s in (*STAGES, "record_consume")), "ms")
    return Measurement(metrics)
