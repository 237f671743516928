"""Benchmark of the SAM 2 streaming backend: per-frame latency by stage, streaming overhead, RSS.

For each image size and particle count it runs the backend with seeded random
weights (speed does not depend on the weights) on synthetic 1024x1024 uint16
frames: one prompt frame, ``--fill`` frames to fill the memory window, then
``--frames`` measured frames with a per-stage breakdown (image encoder, memory
attention, decoder, memory encoder, pre/post-processing). It then times the
bare model forward (the same SAM2Base calls on the same memory, without our
bookkeeping) against our loop's step, interleaved, to give the streaming
overhead. ``--rss-frames`` runs a long stream at a small size and samples the
process RSS. The last line printed is JSON.

Examples::

    python tools/bench_sam2.py                                   # CPU: 512/1024 x 1/4/16 particles
    python tools/bench_sam2.py --device cuda --dtype bfloat16 --compile --sizes 1024 --particles 4 \\
        --model sam2.1_hiera_t --frames 50 --fill 10              # GPU (see docs/sam2_backend.md)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import numpy as np

DETECTOR_SHAPE = (1024, 1024)


def synthetic_frame(index: int, particles: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy uint16 detector frame with ``particles`` bright discs on a grid (drifting slowly)."""
    image = rng.normal(1000.0, 60.0, DETECTOR_SHAPE)
    for y, x in particle_centres(particles):
        y0, x0 = int(y + 0.5 * index), int(x + 0.3 * index)
        image[max(y0 - 12, 0) : y0 + 12, max(x0 - 12, 0) : x0 + 12] += 400.0
    return np.clip(image, 0, 65535).astype(np.uint16)


def particle_centres(particles: int) -> list[tuple[float, float]]:
    side = int(np.ceil(np.sqrt(particles)))
    step = DETECTOR_SHAPE[0] / (side + 1)
    return [((1 + i // side) * step, (1 + i % side) * step) for i in range(particles)]


def bare_forward(model: Any, image: Any, frame: int, output_dict: dict, batch: int) -> None:
    """The model's own compute for one tracked frame: what any SAM 2 loop has to run."""
    from sam4em_live.segment.sam2.engine import ENDLESS_FRAMES

    _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(image))
    feats = [f.expand(-1, batch, -1) for f in feats]
    pix = model._prepare_memory_conditioned_features(
        frame, False, feats[-1:], [pos[-1].expand(-1, batch, -1)], sizes[-1:], output_dict, ENDLESS_FRAMES
    )
    high_res = [
        f.permute(1, 2, 0).view(batch, f.size(2), *s) for f, s in zip(feats[:-1], sizes[:-1], strict=True)
    ]
    out = model._forward_sam_heads(pix, None, None, high_res, model._use_multimask(False, None))
    model._encode_new_memory(feats, sizes, out[4], out[6], False)


def bench_case(args: argparse.Namespace, size: int, particles: int) -> dict[str, Any]:
    import torch

    from sam4em_live.frames import Frame
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.sam2 import create
    from sam4em_live.segment.sam2.memory import batched_output_dict

    segmenter = create({
        "model": args.model, "random_weights": True, "device": args.device, "dtype": args.dtype,
        "compile": args.compile, "image_size_px": size, "profile": True,
    })
    rng = np.random.default_rng(0)
    prompts = [Prompt(i + 1, 0, ((x, y),), (1,)) for i, (y, x) in enumerate(particle_centres(particles))]
    frames = [Frame("bench", i, time.time(), synthetic_frame(i, particles, rng)) for i in range(3)]
    for i in range(1 + args.fill):  # prompt frame + memory window fill (not measured)
        segmenter.track(Frame("bench", i, 0.0, frames[i % 3].pixels), prompts if i == 0 else [])
    segmenter.timer.seconds.clear()
    wall = []
    for i in range(args.frames):
        start = time.perf_counter()
        segmenter.track(Frame("bench", 1 + args.fill + i, 0.0, frames[i % 3].pixels), [])
        wall.append(time.perf_counter() - start)
    stages = {k: 1000.0 * v / args.frames for k, v in segmenter.timer.seconds.items()}
    overhead = streaming_overhead(args, segmenter, frames, batched_output_dict, torch)
    return {
        "image_size_px": size, "particles": particles, "frames": args.frames,
        "ms_per_frame": 1000.0 * statistics.mean(wall), "fps": 1.0 / statistics.mean(wall),
        "stage_ms": {k: round(v, 2) for k, v in stages.items()}, **overhead,
    }


def streaming_overhead(args, segmenter, frames, batched_output_dict, torch) -> dict[str, float]:
    """Our step vs the bare model forward on the same memory, interleaved (the machine is shared)."""
    engine, model, timer = segmenter.engine, segmenter.model, segmenter.timer
    banks = list(engine.banks.values())
    same_layout = len({b.layout() for b in banks}) == 1
    ours, bare, in_model = [], [], []
    with torch.inference_mode(), segmenter._autocast():
        image = segmenter.preprocess(frames[0].pixels)
        output_dict = batched_output_dict(banks, engine._maskmem_pos_enc or [])
        # The bare forward always runs the frame this snapshot of the memory belongs to, so it reads
        # as many memories as our step does once the window is full.
        snapshot_frame = engine.next_frame
        for _ in range(args.overhead_frames):
            start = time.perf_counter()
            bare_forward(model, image, snapshot_frame, output_dict, len(banks))
            _sync(segmenter.device, torch)
            bare.append(time.perf_counter() - start)
            timer.seconds.clear()
            start = time.perf_counter()
            engine.step(image, {})
            _sync(segmenter.device, torch)
            ours.append(time.perf_counter() - start)
            in_model.append(sum(timer.seconds.values()))
    ours_ms, bare_ms = 1000.0 * statistics.median(ours), 1000.0 * statistics.median(bare)
    # Direct measure, free of run-to-run noise: the part of each step spent outside the model's
    # four stages (bank stacking, bf16 casts, pruning, collection).
    outside = [step - model_s for step, model_s in zip(ours, in_model, strict=True)]
    return {"step_ms": round(ours_ms, 2), "bare_forward_ms": round(bare_ms, 2),
            "streaming_overhead_pct": round(100.0 * (ours_ms - bare_ms) / bare_ms, 2),
            "loop_outside_model_ms": round(1000.0 * statistics.median(outside), 2),
            "loop_outside_model_pct": round(100.0 * statistics.median(
                [o / m for o, m in zip(outside, in_model, strict=True)]), 2),
            "same_memory_layout": same_layout}


def rss_run(args: argparse.Namespace) -> dict[str, Any]:
    """Long stream at a small size: process RSS sampled every 100 frames."""
    from sam4em_live.frames import Frame
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.sam2 import create

    segmenter = create({"model": args.model, "random_weights": True, "device": args.device,
                        "image_size_px": args.rss_size, "dtype": args.dtype})
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 4000, (256, 256), dtype=np.uint16) for _ in range(4)]
    prompts = [Prompt(i + 1, 0, ((40.0 + 50 * i, 60.0),), (1,)) for i in range(4)]
    samples = []
    for i in range(args.rss_frames):
        segmenter.track(Frame("rss", i, 0.0, pixels[i % 4]), prompts if i == 0 else [])
        if i % 100 == 99:
            samples.append((i + 1, _rss_mib()))
    return {"rss_frames": args.rss_frames, "rss_image_size_px": args.rss_size, "rss_mib": samples}


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _sync(device: Any, torch: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_t")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", help="autocast dtype on CUDA (float32 elsewhere)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--frames", type=int, default=2, help="measured frames per case")
    parser.add_argument("--fill", type=int, default=6, help="frames run before measuring (memory window)")
    parser.add_argument("--overhead-frames", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--rss-frames", type=int, default=0, help="also run a long stream and sample RSS")
    parser.add_argument("--rss-size", type=int, default=128)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = []
    for size in args.sizes:
        for particles in args.particles:
            case = bench_case(args, size, particles)
            cases.append(case)
            print(f"size {size:5d}  particles {particles:3d}  {case['ms_per_frame']:9.1f} ms/frame  "
                  f"stages {case['stage_ms']}  overhead {case['streaming_overhead_pct']:+.1f}% "
                  f"(step {case['step_ms']} ms vs bare {case['bare_forward_ms']} ms; outside the model "
                  f"{case['loop_outside_model_ms']} ms = {case['loop_outside_model_pct']}%)", flush=True)
    result: dict[str, Any] = {
        "benchmark": "sam2_backend", "model": args.model, "random_weights": True,
        "device": args.device, "device_name": _device_name(args.device, torch),
        "dtype": args.dtype if args.device.startswith("cuda") else "float32",
        "compile": args.compile, "torch_threads": torch.get_num_threads(), "cases": cases,
    }
    if args.rss_frames:
        result.update(rss_run(args))
        print(f"RSS MiB every 100 frames: {[round(r, 1) for _, r in result['rss_mib']]}", flush=True)
    print(json.dumps(result))


def _device_name(device: str, torch: Any) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({torch.get_num_threads()} torch threads)"


if __name__ == "__main__":
    main()
