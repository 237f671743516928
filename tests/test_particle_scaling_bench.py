"""The particle-scaling benchmark (issue 23): its synthetic clip, and a tiny end-to-end run through the harness."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from tools.bench import thread_cpu
from tools.bench.benchmarks.particle_clips import particle_centres, particle_clip
from tools.bench.provenance import REPO_ROOT
from tools.bench.schema import load_results

if TYPE_CHECKING:
    from pathlib import Path

TINY = ["-p", "warmup_frames=3", "-p", "sizes=[192]", "-p", "particles=[1,3]", "-p", "seconds=0.6", "-p", "warmup_s=0.1",
        "-p", "min_frames=4", "-p", "clip_frames=4", "-p", "record=false"]


def run_bench(*params: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENCH_CACHE_DIR": str(out.parent / "cache")}
    return subprocess.run([sys.executable, "-m", "tools.bench", "run", "particle-scaling", *params, "--out", str(out)],
                          cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=180)


def test_clip_has_n_dark_well_separated_discs_at_the_true_centres() -> None:
    clip, centres = particle_clip(256, 9, 5, seed=1)
    assert clip.shape == (5, 256, 256) and clip.dtype == np.uint16 and centres.shape == (5, 9, 2)
    gaps = np.linalg.norm(centres[:, :, None] - centres[:, None], axis=-1) + np.eye(9) * 1e9
    assert gaps.min() > 4 * 14  # at least two diameters of free space between neighbours, on every frame
    background = float(np.median(clip[0]))
    for y, x in centres[0]:
        assert clip[0, int(round(y)) - 3:int(round(y)) + 4, int(round(x)) - 3:int(round(x)) + 4].mean() < background - 8
    assert len(particle_centres(1024, 100)) == 100


def test_tiny_run_reports_every_case_and_tracks_every_particle(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = run_bench(*TINY, out=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = load_results(out)
    for n in (1, 3):
        key = f"size192.particles{n}"
        metrics = {name: record.metrics[f"{key}.{name}"] for name in (
            "max_fps", "tracked_fraction", "camera_processed_fps", "camera_latency_ms_p50", "camera_latency_ms_p99",
            "camera_frames_dropped", "camera_frames")}
        assert metrics["max_fps"].value > 5 and metrics["max_fps"].unit == "frames/s"
        assert metrics["tracked_fraction"].value == 1.0  # every prompted particle present on every measured frame
        # Live, the prompts land frames after frame 0: the camera run measures only frames after that.
        assert record.metrics[f"{key}.camera_tracked_fraction"].value == 1.0
        assert record.metrics[f"{key}.camera_landed_after_frames"].value >= 0
        assert 0 < metrics["camera_latency_ms_p50"].value <= metrics["camera_latency_ms_p99"].value
        assert metrics["camera_frames"].value >= 4 and metrics["camera_frames_dropped"].value >= 0
        # Where the frame's time went: the worker's stages, and the CPU of the service's worker thread.
        assert record.metrics[f"{key}.stage_segment_ms_mean"].value > 0
        cpu = {name.removeprefix(f"{key}.cpu_ms_per_frame."): m.value for name, m in record.metrics.items()
               if name.startswith(f"{key}.cpu_ms_per_frame.")}
        assert cpu["all"] > 0 and cpu["all"] >= cpu.get("sam4em-service", 0.0)


def test_a_case_with_too_few_frames_fails_the_run(tmp_path: Path) -> None:
    # Two frames at most cannot cover the warm-up: the benchmark must refuse to report figures.
    done = run_bench(*TINY, "-p", "particles=[1]", "-p", "max_frames=2", out=tmp_path / "run.json")
    assert done.returncode != 0
    assert "frames processed" in done.stdout + done.stderr


def test_thread_cpu_names_a_busy_thread_and_counts_only_its_own_time() -> None:
    # Both threads run until after the second sample (an event ends them, not a time), so their names are
    # read from threading while they are alive however the suite's earlier tests left the scheduler.
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    before = thread_cpu.sample()
    started = time.perf_counter()
    busy = threading.Thread(target=spin, name="busy-probe")
    idle = threading.Thread(target=stop.wait, name="idle-probe")
    busy.start(), idle.start()
    try:
        time.sleep(0.2)
        during = thread_cpu.sample()
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        busy.join(), idle.join()
    spent = thread_cpu.difference(during, before)
    assert 0.02 <= spent["busy-probe"] <= elapsed + 0.05  # at most its wall time, plus a clock tick or so
    assert spent["idle-probe"] < 0.05


def test_a_revision_against_itself_tracks_the_same_masks_interleaved() -> None:
    # The --ab probe loads two packages in one process (imports renamed): the same code gives the same masks.
    from tools.bench.benchmarks.particle_probes import compare_track

    report = compare_track("HEAD..HEAD", 2, 128, frames=3, settle=2)
    assert report.endswith("frames with different masks: 0"), report
    assert "HEAD / HEAD: mean" in report


def test_the_costliest_frames_are_listed_with_their_parts_and_the_methods_restored() -> None:
    from sam4em_live.segment.embedded.shape import ShapeMemory
    from tools.bench.benchmarks.particle_probes import costliest_frames

    refresh = ShapeMemory.refresh
    report = costliest_frames(2, 128, frames=12, top=3, settle=2)
    lines = report.splitlines()
    assert lines[0].startswith("2 particles, 128²") and len(lines) == 4, report
    assert "learning" in report  # the young memories learn on every frame
    assert ShapeMemory.refresh is refresh
