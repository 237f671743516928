"""Benchmark the recorder: masks.tif page write time and end-to-end writer throughput.

Prints one line per measurement and a final JSON line. Usage::

    python tools/bench_recorder.py [--frames 300] [--edge 1024] [--particles 5] [--repeats 5]
                                   [--compare-with /tmp/old_tiff_writer.py] [--child-pages 2000]

Measured on the writer thread's own work: drawing the uint16 label page from
mask crops, deflate-compressing and appending it (``LabelStackWriter.append``),
the sparse path the mask-writer process uses (``append_masks``: CPU time of the
calling thread per page, the figure that competes with the service), and the
whole `Recorder` (CSV rows + masks + manifest) from `consume` to `close`.
``--child-pages`` also times the mask-writer child process per page (its
rusage), the CPU the recorder costs the service machine. ``--compare-with`` times ``append_masks`` of another copy of
``sam4em_live/sinks/tiff_writer.py`` (e.g. the previous version) the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.io.mask_tiff import LabelStackWriter, draw_labels
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
from sam4em_live.results import FrameResult, RunInfo
from sam4em_live.sinks.mask_process import MaskWriterProcess
from sam4em_live.sinks.recorder import Recorder


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


def bench_append_masks(out: Path, writer_class: type, edge: int, n_frames: int, n_particles: int,
                       repeats: int) -> dict[str, float]:
    """Thread CPU time per ``append_masks`` page (median of the per-repeat medians) and file bytes per page."""
    masks = [particle_masks(edge, n_particles, i) for i in range(n_frames)]
    medians, bytes_per_page = [], 0.0
    for repeat in range(repeats):
        path = out / f"sparse-{writer_class.__module__}-{repeat}.tif"
        writer = writer_class(path)
        cpu_s = []
        for i, page_masks in enumerate(masks):
            t0 = time.thread_time()
            writer.append_masks((edge, edge), page_masks, i)
            cpu_s.append(time.thread_time() - t0)
            if i % 100 == 99:  # the recorder flushes about once a second
                writer.flush()
        writer.close()
        medians.append(float(np.median(cpu_s)))
        bytes_per_page = path.stat().st_size / n_frames
    return {"append_masks_cpu_ms_median": 1e3 * float(np.median(medians)),
            "append_masks_cpu_ms_repeats": [round(1e3 * m, 4) for m in medians], "bytes_per_page": bytes_per_page}


def bench_mask_process(out: Path, edge: int, n_frames: int, n_particles: int, repeats: int) -> dict[str, float]:
    """CPU time of the mask-writer child process per page, as the service runs it (pipe, unpack, append_masks).

    From the children's rusage around a run of ``n_frames`` pages minus a run of
    none (the process start-up), median over ``repeats``.
    """
    masks = [particle_masks(edge, n_particles, i) for i in range(100)]

    def child_cpu_s(n_pages: int, name: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        writer = MaskWriterProcess()
        writer.open(out / f"child-{name}.tif")
        for i in range(n_pages):
            writer.append_masks((edge, edge), masks[i % len(masks)], i)
            if i % 100 == 99:
                writer.flush()
        writer.close()  # joins (reaps) the child, so its CPU time is in RUSAGE_CHILDREN
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    per_page = [(child_cpu_s(n_frames, f"{r}-full") - child_cpu_s(0, f"{r}-empty")) / n_frames for r in range(repeats)]
    return {"child_cpu_ms_per_page_median": 1e3 * float(np.median(per_page)),
            "child_cpu_ms_per_page_repeats": [round(1e3 * p, 4) for p in per_page]}


def load_writer_class(path: str) -> type:
    """`LabelStackWriter` from another copy of tiff_writer.py (to compare versions)."""
    spec = importlib.util.spec_from_file_location("tiff_writer_compared", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LabelStackWriter


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
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the append_masks timing")
    parser.add_argument("--compare-with", default=None, help="another tiff_writer.py whose append_masks to time too")
    parser.add_argument("--child-pages", type=int, default=2000,
                        help="pages sent to the mask-writer child process to time its CPU per page (0: skip)")
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
        writers = {"current": LabelStackWriter}
        if args.compare_with:
            writers["compared"] = load_writer_class(args.compare_with)
        for name, writer_class in writers.items():
            row = bench_append_masks(out, writer_class, args.edge, args.frames, args.particles, args.repeats)
            print(f"append_masks ({name}): {row['append_masks_cpu_ms_median']:.3f} ms CPU per {args.edge}² page "
                  f"with {args.particles} particles (repeats {row['append_masks_cpu_ms_repeats']}), "
                  f"{row['bytes_per_page'] / 1024:.1f} KiB/page")
            summary[f"append_masks_{name}"] = row
        if args.child_pages:
            row = bench_mask_process(out, args.edge, args.child_pages, args.particles, repeats=3)
            print(f"mask-writer child process: {row['child_cpu_ms_per_page_median']:.3f} ms CPU per page "
                  f"(repeats {row['child_cpu_ms_per_page_repeats']})")
            summary["mask_process"] = row
        rec = bench_recorder(out, args.edge, args.frames, args.particles)
        print(f"Recorder end to end: {rec['recorder_frames_per_s']:.0f} frames/s written; consume() median "
              f"{rec['consume_us_median']:.1f} µs, max {rec['consume_us_max']:.0f} µs")
        summary.update(rec)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
