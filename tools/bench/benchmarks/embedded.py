"""Per-frame cost of the embedded backend's ``track`` alone (no I/O, no measurement), one thread.

A cached simulated clip (default ``multi-1024``: 4 particles, 1024² uint16) is prompted on frame 0 with
points from the truth; after ``warmup`` frames (memories filling) ``frames`` frames are timed. With
``repeats`` > 1 the clip is run again with a fresh segmenter each time (the start-up: ``warmup 0``).
BLAS/OpenMP pools are pinned to one thread, so the figure is the cost on one core. The masks' digest is
a fingerprint: a speed-up must leave it unchanged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tools.bench.data import simulated_clip
from tools.bench.figures import MaskDigest, count, distribution, integer, mapping, text
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping


@benchmark("embedded-track", "embedded backend: ms per frame of Segmenter.track alone, one thread",
           {"preset": "multi-1024", "frames": 200, "warmup": 40, "seed": 0, "repeats": 1, "options": {}},
           quick={"frames": 110, "warmup": 40}, one_blas_thread=True)
def embedded_track(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    from sam4em_live.frames import Frame
    from sam4em_live.segment.registry import create_segmenter

    warmup, frames, repeats = integer(params, "warmup"), integer(params, "frames"), integer(params, "repeats")
    clip = simulated_clip(context.cache, text(params, "preset"), warmup + frames, integer(params, "seed"))
    pixels = clip.pixels
    prompts = clip.prompts((0,), "point")
    digest = MaskDigest()
    timed_ms: list[float] = []
    prompt_ms: list[float] = []
    all_present = 0
    for _ in range(repeats):
        segmenter = create_segmenter("embedded", mapping(params, "options"))
        try:
            for i in range(len(pixels)):
                edits = [p for p in prompts if p.frame == i]
                start = time.perf_counter()
                masks = segmenter.track(Frame("bench", i, 0.0, pixels[i]), edits)
                elapsed_ms = (time.perf_counter() - start) * 1e3
                digest.add(masks)
                if edits:
                    prompt_ms.append(elapsed_ms)
                if i >= warmup:
                    timed_ms.append(elapsed_ms)
                    all_present += sum(m.present for m in masks) == len(prompts)
        finally:
            segmenter.close()
    metrics: dict[str, Metric] = distribution("track_ms", timed_ms, "ms")
    metrics["track_ms_median_per_particle"] = Metric(metrics["track_ms_p50"].value / max(len(prompts), 1), "ms")
    metrics["prompt_frame_ms"] = Metric(sum(prompt_ms) / max(len(prompt_ms), 1), "ms")
    metrics["particles"] = count(len(prompts))
    metrics["all_present_fraction"] = Metric(all_present / max(len(timed_ms), 1), "fraction", "higher")
    return Measurement(metrics, {"masks_sha256": digest.hexdigest()})
