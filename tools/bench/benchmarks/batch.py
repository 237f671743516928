"""Batch re-analysis on Dask (`sam4em_live.batch`): speed-up of 2 workers over 1, scheduling overhead, faults.

``recordings`` equal simulated recordings (``frames`` frames, two moving disks, a prompts file beside each)
run side by side in one process on a 1-worker and then a 2-worker ``LocalCluster`` (process workers, each
warmed up by importing the pipeline first, so the figures are the batch's, not the start-up's). Scheduling
overhead per recording is the 1-worker batch's wall time minus the time its tasks spent inside
``analyse_recording``, over the recordings (expanding inputs, fingerprints, submission, results, tables).
The fault run: ``fault_recordings`` good recordings plus one corrupt file on 2 workers, one worker SIGKILLed
as it starts a recording; then the same batch again, which must recompute nothing.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from tools.bench.figures import count, integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

PROMPTS = {"prompts": [{"frame": 0, "particle": 1, "points": [[30.0, 40.0]]},
                       {"frame": 0, "particle": 2, "points": [[70.0, 60.0]]}]}


def _archive(folder: Path, n: int, frames: int) -> Path:
    import numpy as np

    from sam4em_live.io.tiff_io import write_tiff_stack

    folder.mkdir(parents=True)
    rows, cols = np.mgrid[0:96, 0:128]
    rng = np.random.default_rng(0)
    stack = np.empty((frames, 96, 128), np.uint16)
    for t in range(frames):  # dark disks on a bright background, moving 1 px/frame (tests/conftest.disk_video)
        img = np.full((96, 128), 100.0)
        for x, y in ((30.0 + 0.5 * t, 40.0 + 0.25 * t), (70.0 + 0.25 * t, 60.0 - 0.25 * t)):
            img[(cols - x) ** 2 + (rows - y) ** 2 <= 49] = 60.0
        stack[t] = np.clip(img + rng.normal(0, 4, img.shape), 0, None)
    for i in range(n):
        write_tiff_stack(folder / f"rec{i:03d}.tif", stack, pixel_size_nm=2.0, fps=50.0)
        (folder / f"rec{i:03d}.prompts.json").write_text(json.dumps(PROMPTS))
    return folder


def _cluster(workers: int) -> tuple[Any, Any, float]:
    import dask
    import distributed

    start = time.perf_counter()
    with dask.config.set({"distributed.worker.daemon": False, "distributed.scheduler.allowed-failures": 2}):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=50)
        client = distributed.Client(cluster)
    client.run(lambda: __import__("sam4em_live.batch.task") and __import__("sam4em_live.service.builder")
               and __import__("sam4em_live.analysis.analyze"))
    return cluster, client, time.perf_counter() - start


def _gaps(out: Path, started: float, ended: float) -> tuple[float, float, float]:
    """From the attempts logs of a 1-worker batch: (mean gap between one task's end and the next one's start,
    run_batch's time before the first task, after the last one), in s."""
    spans = sorted((entries[0]["time"], entries[-1]["time"]) for entries in (
        [json.loads(line) for line in log.read_text().splitlines()] for log in (out / "state").glob("*.attempts.jsonl")))
    gaps = [nxt[0] - prev[1] for prev, nxt in pairwise(spans)]
    return sum(gaps) / max(len(gaps), 1), spans[0][0] - started, ended - spans[-1][1]


def _timed_batch(archive: Path, out: Path, workers: int) -> tuple[float, float, float, float, tuple[float, ...]]:
    """(wall s, Σ task s, cluster start-up s, Σ task CPU s, `_gaps`) of the archive on a fresh cluster."""
    from sam4em_live.batch import run_batch

    cluster, client, startup = _cluster(workers)
    try:
        started, start = time.time(), time.perf_counter()
        report = run_batch([archive], out, client=client, progress=False)
        wall = time.perf_counter() - start
        gaps = _gaps(out, started, time.time())
    finally:
        client.close()
        cluster.close()
    if report.failed or len(report.analysed) != len(list(archive.glob("*.tif"))):
        raise RuntimeError(f"batch of {archive} incomplete: {report.lines()}")
    return (wall, sum(o.seconds for o in report.analysed), startup,
            sum(o.cpu_seconds for o in report.analysed), gaps)


def _kill_when_started(log: Path, killed: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        if log.is_file():
            for line in log.read_text().splitlines():
                pid = json.loads(line)["pid"]
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
        time.sleep(0.005)


@benchmark("batch", "Dask batch: 2 workers vs 1, scheduling overhead per recording, 20 recordings with faults",
           {"recordings": 8, "frames": 80, "fault_recordings": 20})
def batch(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    from sam4em_live.batch import run_batch

    n, frames = integer(params, "recordings"), integer(params, "frames")
    archive = _archive(context.scratch / "equal", n, frames)
    one_wall, one_tasks, one_startup, one_cpu, (gap, before, after) = _timed_batch(archive, context.scratch / "one", 1)
    two_wall, two_tasks, two_startup, _, _ = _timed_batch(archive, context.scratch / "two", 2)

    faulty = _archive(context.scratch / "faulty", integer(params, "fault_recordings"), frames)
    (faulty / "corrupt.tif").write_bytes(b"not a TIFF file")
    (faulty / "corrupt.prompts.json").write_text(json.dumps(PROMPTS))
    out = context.scratch / "fault-run"
    killed: list[int] = []
    stop = threading.Event()
    victim = f"rec{integer(params, 'fault_recordings') // 2:03d}"
    killer = threading.Thread(target=_kill_when_started, args=(out / "state" / f"{victim}.attempts.jsonl",
                                                               killed, stop), daemon=True)
    killer.start()
    cluster, client, _ = _cluster(2)
    try:
        report = run_batch([faulty], out, client=client, progress=False, retries=1)
        stop.set()
        start = time.perf_counter()
        resumed = run_batch([faulty], out, client=client, progress=False, retries=0)
        resume_wall = time.perf_counter() - start
    finally:
        stop.set()
        client.close()
        cluster.close()
    faults = len(report.failed) + len(report.retried)
    return Measurement({
        "one_worker_s": Metric(one_wall, "s", "lower"),
        "two_workers_s": Metric(two_wall, "s", "lower"),
        "speedup_2_vs_1": Metric(one_wall / two_wall, "x", "higher"),
        # tasks in flight at once on 2 workers (Σ task time / wall): the scheduler keeps both busy; what that buys
        # in wall time is what the machine's CPU gives the batch
        "concurrency_2_workers": Metric(two_tasks / two_wall, "tasks", "higher"),
        "cluster_startup_s": Metric(max(one_startup, two_startup), "s", "lower"),
        "overhead_per_recording_s": Metric((one_wall - one_tasks) / n, "s", "lower"),
        "task_s_per_recording": Metric(one_tasks / n, "s", "lower"),
        # the overhead's parts: between two tasks on a worker (scheduling proper), and run_batch's own work
        # before the first (inputs, fingerprints, submission) and after the last (tables)
        "gap_between_tasks_s": Metric(gap, "s", "lower"),
        "before_first_task_s": Metric(before, "s", "lower"),
        "after_last_task_s": Metric(after, "s", "lower"),
        # above 1: one recording already keeps more than one core busy (the service's threads), which caps what
        # a second worker can add on a 2-core machine
        "task_cpu_per_wall": Metric(one_cpu / one_tasks, "cores", "none"),
        "fault_good_analysed": count(len(report.analysed)),
        "fault_faults_reported": count(faults if killed else -1),
        "fault_recomputed_on_resume": count(len(resumed.analysed), better="lower"),
        "fault_resume_s": Metric(resume_wall, "s", "lower"),
    })
