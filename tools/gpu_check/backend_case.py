"""One backend case: `Sam2Segmenter.track` on synthetic 1024² uint16 frames, frame after frame."""

from __future__ import annotations

import time
from typing import Any

from tools.bench.benchmarks.sam2 import DETECTOR_SHAPE, particle_centres, synthetic_frame
from tools.gpu_check.measure import FrameLog, reset_peak
from tools.gpu_check.plan import Case

# SAM 2 reads 7 spatial memories and 16 object pointers: after this many frames the memory window is full
# and every later frame costs the same (what a long stream runs at).
FILL_FRAMES = 16


def synthetic_stream(particles: int, frame_px: int, count: int = 3) -> list[Any]:
    """A few distinct uint16 frames, reused in turn (generating noise per frame would time numpy, not SAM 2).

    At 1024 px these are the sam2 benchmark's frames; smaller ones (CPU smoke runs) are them subsampled, so
    the particles stay where `point_prompts` puts them.
    """
    import numpy as np

    if DETECTOR_SHAPE[0] % frame_px:
        raise ValueError(f"frame_px must divide {DETECTOR_SHAPE[0]}, got {frame_px}")
    rng = np.random.default_rng(0)
    step = DETECTOR_SHAPE[0] // frame_px
    return [np.ascontiguousarray(synthetic_frame(i, particles, rng)[::step, ::step]) for i in range(count)]


def point_prompts(particles: int, frame_px: int) -> list[Any]:
    """One point per particle, on the benchmark's grid, scaled to the frame (each inside its bright square)."""
    from sam4em_live.particles import Prompt

    scale = frame_px / DETECTOR_SHAPE[0]
    return [Prompt(i + 1, 0, ((x * scale, y * scale),), (1,))
            for i, (y, x) in enumerate(particle_centres(particles))]


def run_backend_case(case: Case, device: str, image_size_px: int, frames: int, seconds: float,
                     sample_every: int, frame_px: int = 1024, fill_frames: int = FILL_FRAMES) -> dict[str, Any]:
    """Warm up (prompt frame + memory fill), then measure up to ``frames`` frames or ``seconds`` in all."""
    import torch

    from sam4em_live.frames import Frame
    from sam4em_live.segment.registry import create_segmenter

    started = time.monotonic()
    stop_at = started + seconds
    reset_peak(device)
    segmenter: Any = create_segmenter("sam2", case.options(device, image_size_px))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pixels = synthetic_stream(case.particles, frame_px)
    prompts = point_prompts(case.particles, frame_px)
    try:
        warm_start = time.perf_counter()
        for i in range(1 + fill_frames):
            segmenter.track(Frame("gpu-check", i, 0.0, pixels[i % len(pixels)]), prompts if i == 0 else [])
        sync()
        warmup_s = time.perf_counter() - warm_start
        log = FrameLog(device, sample_every)
        measure_start = time.perf_counter()
        for i in range(frames):
            if time.monotonic() >= stop_at:
                break
            start = time.perf_counter()
            segmenter.track(Frame("gpu-check", 1 + fill_frames + i, 0.0, pixels[i % len(pixels)]), [])
            sync()  # track returns host masks (already synchronous); this makes the timing explicit
            log.add(1e3 * (time.perf_counter() - start))
        figures = log.figures(time.perf_counter() - measure_start)
        random_weights = bool(segmenter.describe().get("random_weights", False))
    finally:
        segmenter.close()
        del segmenter
    return {"case": case.name, "kind": case.kind, "model": case.model, "particles": case.particles,
            "mode": case.mode, "frames_requested": frames, "warmup_s": warmup_s, "budget_s": seconds,
            "cut": figures["frames"] < frames, "random_weights": random_weights, **figures}
