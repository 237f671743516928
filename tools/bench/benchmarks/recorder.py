"""The recorder's costs: masks.tif pages, the mask-writer child process, and the whole `Recorder`.

On ``edge``² label pages with ``particles`` elliptical particles (~81x49 px): drawing a page from mask
crops and appending it whole (``LabelStackWriter.append``, zlib levels 1/3/6); the sparse path the
mask-writer child uses (``append_masks``: CPU time of the calling thread per page, median of
``repeats``); the child process's own CPU per page as the service runs it (pipe, unpack, write; from
the children's rusage, minus a run with no pages), over ``child_pages`` pages (0: skipped); and the
whole `Recorder` (CSV rows + masks + manifest) from the first ``consume`` to the end of ``close``.
"""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.figures import integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


def particle_masks(edge: int, n_particles: int, index: int, radius: int = 40) -> list[Any]:
    from sam4em_live.particles import ParticleMask

    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    crop = xx**2 + (yy / 0.6) ** 2 <= radius**2  # elongated particles
    masks = []
    for p in range(n_particles):
        x0 = (150 + 170 * p + index) % (edge - crop.shape[1])
        y0 = (100 + 130 * p) % (edge - crop.shape[0])
        masks.append(ParticleMask(p + 1, True, 0.9, (x0, y0, x0 + crop.shape[1], y0 + crop.shape[0]), crop))
    return masks


def _whole_pages(out: Path, edge: int, n_frames: int, n_particles: int, level: int) -> dict[str, Metric]:
    from sam4em_live.io.mask_tiff import LabelStackWriter, draw_labels

    path = out / f"masks-l{level}.tif"
    writer = LabelStackWriter(path, compression_level=level)
    draw_s, write_s = [], []
    for i in range(n_frames):
        masks = particle_masks(edge, n_particles, i)
        t0 = time.perf_counter()
        labels, _ = draw_labels((edge, edge), masks)
        t1 = time.perf_counter()
        writer.append(labels, i)
        draw_s.append(t1 - t0)
        write_s.append(time.perf_counter() - t1)
    writer.close()
    return {f"level{level}_draw_ms_median": Metric(1e3 * float(np.median(draw_s)), "ms"),
            f"level{level}_write_ms_median": Metric(1e3 * float(np.median(write_s)), "ms"),
            f"level{level}_write_ms_p95": Metric(1e3 * float(np.percentile(write_s, 95)), "ms"),
            f"level{level}_KiB_per_page": Metric(path.stat().st_size / n_frames / 1024, "KiB")}


def _append_masks(out: Path, edge: int, n_frames: int, n_particles: int, repeats: int) -> dict[str, Metric]:
    from sam4em_live.io.mask_tiff import LabelStackWriter

    pages = [particle_masks(edge, n_particles, i) for i in range(n_frames)]
    medians, size = [], 0
    for repeat in range(repeats):
        path = out / f"sparse-{repeat}.tif"
        writer = LabelStackWriter(path)
        cpu_s = []
        for i, masks in enumerate(pages):
            t0 = time.thread_time()
            writer.append_masks((edge, edge), masks, i)
            cpu_s.append(time.thread_time() - t0)
            if i % 100 == 99:  # the recorder flushes about once a second
                writer.flush()
        writer.close()
        medians.append(float(np.median(cpu_s)))
        size = path.stat().st_size
    return {"append_masks_cpu_ms_median": Metric(1e3 * float(np.median(medians)), "ms"),
            "append_masks_KiB_per_page": Metric(size / n_frames / 1024, "KiB")}


def _child_cpu_ms_per_page(out: Path, edge: int, n_pages: int, n_particles: int, repeats: int) -> float:
    from sam4em_live.sinks.mask_process import MaskWriterProcess

    pages = [particle_masks(edge, n_particles, i) for i in range(100)]

    def child_cpu_s(count: int, name: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        writer = MaskWriterProcess()
        writer.open(out / f"child-{name}.tif")
        for i in range(count):
            writer.append_masks((edge, edge), pages[i % len(pages)], i)
            if i % 100 == 99:
                writer.flush()
        writer.close()  # joins (reaps) the child, so its CPU time is in RUSAGE_CHILDREN
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    per_page = [(child_cpu_s(n_pages, f"{r}-full") - child_cpu_s(0, f"{r}-empty")) / n_pages for r in range(repeats)]
    return 1e3 * float(np.median(per_page))


def _whole_recorder(out: Path, edge: int, n_frames: int, n_particles: int) -> dict[str, Metric]:
    from sam4em_live.frames import Calibration, Frame, SeriesInfo
    from sam4em_live.measure import measure_mask
    from sam4em_live.results import FrameResult, RunInfo
    from sam4em_live.sinks.recorder import Recorder

    calibration = Calibration(pixel_size_nm=1.0, fps=80.0)
    pixels = np.zeros((edge, edge), np.uint16)
    results = []
    for i in range(n_frames):
        masks = particle_masks(edge, n_particles, i)
        results.append(FrameResult(Frame("bench", i, time.time(), pixels, calibration), tuple(masks),
                                   tuple(measure_mask(m, i) for m in masks)))
    recorder = Recorder(out, queue_frames=n_frames + 10)
    recorder.open(RunInfo("bench-run", SeriesInfo("bench", (edge, edge), "<u2", calibration),
                          {"backend": "none", "random_weights": False}, {}))
    consume_s = []
    t0 = time.perf_counter()
    for result in results:
        t = time.perf_counter()
        recorder.consume(result)
        consume_s.append(time.perf_counter() - t)
    recorder.close()
    return {"recorder_frames_per_s": Metric(n_frames / (time.perf_counter() - t0), "frames/s", "higher"),
            "recorder_consume_us_median": Metric(1e6 * float(np.median(consume_s)), "us"),
            "recorder_consume_us_max": Metric(1e6 * float(np.max(consume_s)), "us")}


@benchmark("recorder", "masks.tif page cost, mask-writer child CPU per page, whole Recorder frames/s",
           {"frames": 300, "edge": 1024, "particles": 5, "repeats": 5, "child_pages": 2000},
           quick={"frames": 200, "repeats": 3, "child_pages": 500})
def recorder(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    edge, n, particles = integer(params, "edge"), integer(params, "frames"), integer(params, "particles")
    metrics: dict[str, Metric] = {}
    for level in (1, 3, 6):
        metrics.update(_whole_pages(context.scratch, edge, n, particles, level))
    metrics.update(_append_masks(context.scratch, edge, n, particles, integer(params, "repeats")))
    if integer(params, "child_pages"):
        metrics["mask_child_cpu_ms_per_page"] = Metric(
            _child_cpu_ms_per_page(context.scratch, edge, integer(params, "child_pages"), particles, 3), "ms")
    metrics.update(_whole_recorder(context.scratch / "runs", edge, n, particles))
    return Measurement(metrics)
