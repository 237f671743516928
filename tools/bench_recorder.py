"""Benchmark the recorder: masks.tif page write time and end-to-end writer throughput.

Prints one line per measurement and a final JSON line. Usage::

    python tools/bench_recorder.py [--frames 300] [--edge 1024] [--particles 5]

Measured on the writer thread's own work: drawing the uint16 label page from
mask crops, deflate-compressing and appending it (``LabelStackWriter``), and
the whole `Recorder` (CSV rows + masks + manifest) from `consume` to `close`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.measure import measure_mask
from sam4em_live.results import FrameResult
from sam4em_live.segment.base import ParticleMask
from sam4em_live.sinks.base import RunInfo
from sam4em_live.sinks.recorder import Recorder
from sam4em_live.sinks.tiff_writer import LabelStackWriter, draw_labels


def particle_masks(edge: int, n_particles: int, index: int, radius: int = 40) -> list[ParticleMask]:
    masks = []
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    crop = xx**2 + (yy / 0.6) ** 2 <= radius**2  # elongated particles
    for p in range(n_particles):
        x0 = (150 + 170 * p + index) % (edge - crop.shape[1])
        y0 = (100 + 130 * p) % (edge - crop.shape[0])
        masks.append(ParticleMask(p + 1, True, 0.9, (x0, y0, x0 + crop.shape[1], y0 + crop.shape[0]), crop))
    return masks


def bench_pages(out: Path, edge: int, n_frames: int, n_particles: int, level: int) -> dict[str, float]:
    writer = LabelStackWriter(out / f"masks-l{level}.tif", compression_level=level)
    draw_s, write_s = [], []
    for i in range(n_frames):
        masks = particle_masks(edge, n_particles, i)
        t0 = time.perf_counter()
        labels, _ = draw_labels((edge, edge), masks)
        t1 = time.perf_counter()
        writer.append(labels, i)
        t2 = time.perf_counter()
        draw_s.append(t1 - t0)
        write_s.append(t2 - t1)
    writer.close()
    size = (out / f"masks-l{level}.tif").stat().st_size
    return {"level": level, "draw_ms_median": 1e3 * float(np.median(draw_s)),
            "write_ms_median": 1e3 * float(np.median(write_s)), "write_ms_p95": 1e3 * float(np.percentile(write_s, 95)),
            "bytes_per_page": size / n_frames}


def bench_recorder(out: Path, edge: int, n_frames: int, n_particles: int) -> dict[str, float]:
    cal = Calibration(pixel_size_nm=1.0, fps=80.0)
    series = SeriesInfo("bench", (edge, edge), "<u2", cal)
    pixels = np.zeros((edge, edge), np.uint16)
    results = []
    for i in range(n_frames):
        masks = particle_masks(edge, n_particles, i)
        results.append(FrameResult(Frame("bench", i, time.time(), pixels, cal), tuple(masks),
                                    tuple(measure_mask(m, i) for m in masks)))
    recorder = Recorder(out, queue_frames=n_frames + 10)
    recorder.open(RunInfo("bench-run", series, {"backend": "none", "random_weights": False}, {}))
    consume_s = []
    t0 = time.perf_counter()
    for result in results:
        t = time.perf_counter()
        recorder.consume(result)
        consume_s.append(time.perf_counter() - t)
    recorder.close()
    total = time.perf_counter() - t0
    return {"recorder_frames_per_s": n_frames / total, "consume_us_median": 1e6 * float(np.median(consume_s)),
            "consume_us_max": 1e6 * float(np.max(consume_s))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--edge", type=int, default=1024)
    parser.add_argument("--particles", type=int, default=5)
    args = parser.parse_args()
    summary: dict[str, object] = {"edge_px": args.edge, "frames": args.frames, "particles": args.particles}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        levels = []
        for level in (1, 3, 6):
            row = bench_pages(out, args.edge, args.frames, args.particles, level)
            print(f"zlib level {level}: draw {row['draw_ms_median']:.2f} ms, write {row['write_ms_median']:.2f} ms "
                  f"(p95 {row['write_ms_p95']:.2f}) per {args.edge}² page, {row['bytes_per_page'] / 1024:.1f} KiB/page")
            levels.append(row)
        summary["pages"] = levels
        rec = bench_recorder(out, args.edge, args.frames, args.particles)
        print(f"Recorder end to end: {rec['recorder_frames_per_s']:.0f} frames/s written; consume() median "
              f"{rec['consume_us_median']:.1f} µs, max {rec['consume_us_max']:.0f} µs")
        summary.update(rec)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
