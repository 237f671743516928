"""The SAM 2 streaming backend: per-frame latency by stage, streaming overhead, and RSS over a long stream.

For each image size and particle count the backend runs with seeded random weights (speed does not
depend on the weights; the outputs are not segmentations) on synthetic 1024² uint16 frames: one prompt
frame, ``fill`` frames to fill the memory window, then ``frames`` measured frames with a per-stage
breakdown. Then our step is timed against the bare model forward (the same `SAM2Base` calls on the same
memory, without our bookkeeping), interleaved: the streaming overhead. ``loop_outside_model`` (the part
of each step outside the model's four stages) is free of load noise and is the figure to trust.
``rss_frames`` > 0 also runs a long stream at ``rss_size`` and reports the RSS growth. Needs torch and
sam2 (``pip install -e ".[sam2]"``); ``device = "cuda"`` for a GPU.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.figures import integer, strings, text
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping

DETECTOR_SHAPE = (1024, 1024)


def synthetic_frame(index: int, particles: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy uint16 detector frame with ``particles`` bright squares on a grid (drifting slowly)."""
    image = rng.normal(1000.0, 60.0, DETECTOR_SHAPE)
    for y, x in particle_centres(particles):
        y0, x0 = int(y + 0.5 * index), int(x + 0.3 * index)
        image[max(y0 - 12, 0) : y0 + 12, max(x0 - 12, 0) : x0 + 12] += 400.0
    return np.clip(image, 0, 65535).astype(np.uint16)


def particle_centres(particles: int) -> list[tuple[float, float]]:
    side = int(np.ceil(np.sqrt(particles)))
    step = DETECTOR_SHAPE[0] / (side + 1)
    return [((1 + i // side) * step, (1 + i % side) * step) for i in range(particles)]


def bare_forward(model: Any, image: Any, frame: int, output_dict: dict[str, Any], batch: int) -> None:
    """The model's own compute for one tracked frame (private `SAM2Base` calls of sam2 1.1.0, as our engine)."""
    from sam4em_live.segment.sam2.engine import ENDLESS_FRAMES

    _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(image))
    feats = [f.expand(-1, batch, -1) for f in feats]
    pix = model._prepare_memory_conditioned_features(
        frame, False, feats[-1:], [pos[-1].expand(-1, batch, -1)], sizes[-1:], output_dict, ENDLESS_FRAMES)
    high_res = [f.permute(1, 2, 0).view(batch, f.size(2), *s) for f, s in zip(feats[:-1], sizes[:-1], strict=True)]
    out = model._forward_sam_heads(pix, None, None, high_res, model._use_multimask(False, None))
    model._encode_new_memory(feats, sizes, out[4], out[6], False)


def _case(params: Mapping[str, ParamValue], size: int, particles: int) -> dict[str, Metric]:
    from sam4em_live.frames import Frame
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.registry import create_segmenter

    fill, n = integer(params, "fill"), integer(params, "frames")
    segmenter: Any = create_segmenter("sam2", {
        "model": text(params, "model"), "random_weights": True, "device": text(params, "device"),
        "dtype": text(params, "dtype"), "compile": bool(params["compile"]), "image_size_px": size, "profile": True})
    rng = np.random.default_rng(0)
    prompts = [Prompt(i + 1, 0, ((x, y),), (1,)) for i, (y, x) in enumerate(particle_centres(particles))]
    frames = [synthetic_frame(i, particles, rng) for i in range(3)]
    for i in range(1 + fill):  # prompt frame + memory window fill (not measured)
        segmenter.track(Frame("bench", i, 0.0, frames[i % 3]), prompts if i == 0 else [])
    segmenter.timer.seconds.clear()
    wall = []
    for i in range(n):
        start = time.perf_counter()
        segmenter.track(Frame("bench", 1 + fill + i, 0.0, frames[i % 3]), [])
        wall.append(time.perf_counter() - start)
    key = f"size{size}.particles{particles}"
    metrics = {f"{key}.ms_per_frame": Metric(1e3 * statistics.mean(wall), "ms")}
    metrics.update({f"{key}.stage_{stage}_ms": Metric(1e3 * seconds / n, "ms")
                    for stage, seconds in segmenter.timer.seconds.items()})
    metrics.update({f"{key}.{name}": m for name, m in _overhead(segmenter, frames[0],
                                                                 integer(params, "overhead_frames")).items()})
    segmenter.close()
    return metrics


def _overhead(segmenter: Any, pixels: np.ndarray, repeats: int) -> dict[str, Metric]:
    """Our step against the bare model forward on the same memory, interleaved (the machine is shared)."""
    import torch

    from sam4em_live.segment.sam2.memory import batched_output_dict

    engine, model, timer = segmenter.engine, segmenter.model, segmenter.timer
    banks = list(engine.banks.values())
    ours, bare, in_model = [], [], []

    def sync() -> None:
        if segmenter.device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode(), segmenter._autocast():
        image = segmenter.preprocess(pixels)
        output_dict = batched_output_dict(banks, engine._maskmem_pos_enc or [])
        # The bare forward runs the frame this snapshot of the memory belongs to: as many memories as our step.
        snapshot_frame = engine.next_frame
        for _ in range(repeats):
            start = time.perf_counter()
            bare_forward(model, image, snapshot_frame, output_dict, len(banks))
            sync()
            bare.append(time.perf_counter() - start)
            timer.seconds.clear()
            start = time.perf_counter()
            engine.step(image, {})
            sync()
            ours.append(time.perf_counter() - start)
            in_model.append(sum(timer.seconds.values()))
    ours_ms, bare_ms = 1e3 * statistics.median(ours), 1e3 * statistics.median(bare)
    outside = [step - model_s for step, model_s in zip(ours, in_model, strict=True)]
    return {"step_ms": Metric(ours_ms, "ms"), "bare_forward_ms": Metric(bare_ms, "ms"),
            "streaming_overhead_pct": Metric(100.0 * (ours_ms - bare_ms) / bare_ms, "%"),
            "loop_outside_model_ms": Metric(1e3 * statistics.median(outside), "ms"),
            "loop_outside_model_pct": Metric(100.0 * statistics.median(
                [o / m for o, m in zip(outside, in_model, strict=True)]), "%")}


def _rss_growth(params: Mapping[str, ParamValue]) -> dict[str, Metric]:
    """Long stream at a small size: RSS at frame 100 and its growth to the end."""
    from sam4em_live.frames import Frame
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.registry import create_segmenter

    segmenter = create_segmenter("sam2", {"model": text(params, "model"), "random_weights": True,
                                          "device": text(params, "device"), "dtype": text(params, "dtype"),
                                          "image_size_px": integer(params, "rss_size")})
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 4000, (256, 256), dtype=np.uint16) for _ in range(4)]
    prompts = [Prompt(i + 1, 0, ((40.0 + 50 * i, 60.0),), (1,)) for i in range(4)]
    samples = []
    for i in range(integer(params, "rss_frames")):
        segmenter.track(Frame("rss", i, 0.0, pixels[i % 4]), prompts if i == 0 else [])
        if i % 100 == 99:
            samples.append(_rss_mib())
    segmenter.close()
    return {"rss_mib_at_100": Metric(samples[0], "MiB"), "rss_growth_mib": Metric(samples[-1] - samples[0], "MiB")}


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


@benchmark("sam2", "SAM 2 streaming backend (random weights): ms per frame by stage, streaming overhead",
           {"model": "sam2.1_hiera_t", "device": "cpu", "dtype": "bfloat16", "compile": False, "sizes": [512],
            "particles": [1, 4], "frames": 1, "fill": 6, "overhead_frames": 2, "threads": 1, "rss_frames": 0,
            "rss_size": 128})
def sam2(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    import torch

    if integer(params, "threads"):
        torch.set_num_threads(integer(params, "threads"))
    metrics: dict[str, Metric] = {}
    for size in strings(params, "sizes"):
        for particles in strings(params, "particles"):
            metrics.update(_case(params, int(size), int(particles)))
    if integer(params, "rss_frames") >= 200:
        metrics.update(_rss_growth(params))
    return Measurement(metrics)
