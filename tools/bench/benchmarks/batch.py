"""Batch re-analysis on Dask (`sam4em_live.batch`): speed-up of 2 workers over 1, scheduling overhead, faults.

``recordings`` equal simulated recordings (``frames`` frames of 96 x 128, two moving disks, a prompts file
beside each; 800 frames make a task of ~3 s on a free core, as a real recording's seconds-long task, so the
per-task costs do not dominate the comparison) run side by side in one process, ``rounds`` times in the
order 1, 2, 2, 1, ... workers (a load that changes during the run weighs on both), on clusters made by `sam4em_live.batch.runner.start_local_cluster` (what ``run_batch`` runs on: process
workers, one thread each, thread pools pinned). Before the clock starts, each worker runs one short
recording (imports and first-call costs paid, so the figures are the batch's, not the start-up's) and the
client has imported the batch runner. Scheduling overhead per recording is the 1-worker batch's wall time
minus the time its tasks spent inside ``analyse_recording``, over the recordings (expanding inputs,
fingerprints, submission, results, tables). Parallelism is checked, not assumed: the share of the 2-worker
batch's wall time during which both workers were inside a task (from the attempts logs, by process id),
and each worker's thread pins as its process sees them. The fault run: ``fault_recordings`` good
recordings of ``fault_frames`` frames plus one corrupt file on 2 workers, one worker SIGKILLed as it
starts a recording; then the same batch again, which must recompute nothing.

``compare_before=1`` runs every round a second time, interleaved, with the settings a batch had before session
10 (`_BEFORE`: masks.tif by a child process a recording, Dask's default periodic work), and reports those as
``before_*``: the change measured side by side under the same load.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
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
    for t in range(frames):  # dark disks on a bright background (tests/conftest.disk_video), on slow closed
        img = np.full((96, 128), 100.0)  # paths that keep them in the field however long the recording
        phase = 2 * np.pi * t
        for x, y in ((30.0 + 12 * np.sin(phase / 400), 40.0 + 10 * (1 - np.cos(phase / 400))),
                     (70.0 + 12 * np.sin(phase / 300), 60.0 - 8 * np.sin(phase / 500))):
            img[(cols - x) ** 2 + (rows - y) ** 2 <= 49] = 60.0
        stack[t] = np.clip(img + rng.normal(0, 4, img.shape), 0, None)
    for i in range(n):
        write_tiff_stack(folder / f"rec{i:03d}.tif", stack, pixel_size_nm=2.0, fps=50.0)
        (folder / f"rec{i:03d}.prompts.json").write_text(json.dumps(PROMPTS))
    return folder


#: What `compare_before` changes back: the recorder's mask writer of a batch recording, and Dask's settings
#: that `start_local_cluster` makes quiet (their defaults then apply).
_BEFORE = {"mask_writer": "process"}


def _cluster(workers: int, warm_up: Path | None = None, before: bool = False) -> tuple[Any, Any, float]:
    """(cluster, client, start-up s) as `run_batch` makes it; with ``warm_up``, each worker runs that recording.

    ``before``: with the settings of `_BEFORE` (a measurement only: module constants changed for this cluster).
    """
    from sam4em_live.batch import runner

    start = time.perf_counter()
    quiet = dict(runner.QUIET_WORKERS)
    if before:
        runner.QUIET_WORKERS.clear()  # read by start_local_cluster while it starts the cluster
    try:
        cluster, client = runner.start_local_cluster(workers)
    finally:
        runner.QUIET_WORKERS.update(quiet)
    startup = time.perf_counter() - start
    if before:
        client.run(_use_mask_writer, _BEFORE["mask_writer"])
    if warm_up is not None:
        client.run(_warm_worker, str(warm_up))  # every worker at once, each its own copy
    return cluster, client, startup


def _use_mask_writer(kind: str) -> None:
    """In a worker: its batch recordings' masks.tif written by ``kind`` (`recorder.mask_writer`)."""
    from sam4em_live.batch import task

    task.RUN_OVERRIDES["recorder.mask_writer"] = kind


def _warm_worker(archive: str) -> None:
    """Run one short recording in this worker (imports, first calls), outside any batch's output."""
    import tempfile
    from pathlib import Path

    from sam4em_live.batch.inputs import expand_inputs
    from sam4em_live.batch.task import BatchSettings, analyse_recording

    [recording] = expand_inputs([archive])
    with tempfile.TemporaryDirectory() as out:
        analyse_recording(recording, BatchSettings(), Path(out), "warm-up", {})


def _worker_pins(client: Any) -> int:
    """The widest thread pool a worker of ``client`` may start, as its environment says (1 when pinned)."""
    from sam4em_live.batch.runner import WORKER_THREAD_PINS

    seen = client.run(lambda names: [os.environ.get(k) for k in names], list(WORKER_THREAD_PINS))
    values = [int(v) if v and v.isdigit() else os.cpu_count() or 1 for env in seen.values() for v in env]
    return max(values)


def _task_spans(out: Path) -> list[tuple[int, float, float]]:
    """(worker pid, start, end) of each recording's task, from its attempts log: the whole of
    ``analyse_recording``, its Parquet partitions and statistics included (a batch without faults)."""
    spans = []
    for log in (out / "state").glob("*.attempts.jsonl"):
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        spans.append((int(entries[0]["pid"]), float(entries[0]["time"]), float(entries[-1]["time"])))
    return sorted(spans, key=lambda span: span[1])


def _both_busy(spans: list[tuple[int, float, float]], wall_start: float, wall_end: float) -> float:
    """Share of [wall_start, wall_end] during which two different worker processes were inside a task."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for pid, start, end in spans:
        by_pid.setdefault(pid, []).append((start, end))
    if len(by_pid) < 2:
        return 0.0
    first, second = list(by_pid.values())[:2]
    both = sum(max(0.0, min(a1, b1) - max(a0, b0)) for a0, a1 in first for b0, b1 in second)
    return both / (wall_end - wall_start)


def _gaps(spans: list[tuple[int, float, float]], started: float, ended: float) -> tuple[float, float, float]:
    """From the task spans of a 1-worker batch: (mean gap between one task's end and the next one's start,
    run_batch's time before the first task, after the last one), in s."""
    gaps = [nxt[1] - prev[2] for prev, nxt in pairwise(spans)]
    return sum(gaps) / max(len(gaps), 1), spans[0][1] - started, ended - spans[-1][2]


@dataclass(frozen=True)
class _TimedBatch:
    wall_s: float
    task_s: float  # Σ over the recordings of the time inside analyse_recording (attempts logs: start to done)
    startup_s: float
    task_cpu_s: float  # Σ CPU of the worker processes and their children (mask writers) during the runs...
    run_s: float  # ... and Σ wall time of those runs (`RecordingOutcome.seconds`: before the Parquet writes)
    gaps: tuple[float, float, float]  # `_gaps`
    both_busy: float  # `_both_busy`
    pins: int  # `_worker_pins`


def _timed_batch(archive: Path, out: Path, workers: int, warm_up: Path, before: bool = False) -> _TimedBatch:
    """The archive's batch on a fresh, warmed cluster of ``workers`` (``before``: `_cluster`)."""
    # the runner is imported here, not on the clock (its imports, pandas and the readers, take ~0.4 s once)
    from sam4em_live.batch.runner import run_batch

    cluster, client, startup = _cluster(workers, warm_up, before)
    try:
        pins = _worker_pins(client)
        started, start = time.time(), time.perf_counter()
        report = run_batch([archive], out, client=client, progress=False)
        wall = time.perf_counter() - start
        ended = time.time()
    finally:
        client.close()
        cluster.close()
    if report.failed or len(report.analysed) != len(list(archive.glob("*.tif"))):
        raise RuntimeError(f"batch of {archive} incomplete: {report.lines()}")
    spans = _task_spans(out)
    return _TimedBatch(wall, sum(end - start for _, start, end in spans), startup,
                       sum(o.cpu_seconds + o.child_cpu_seconds for o in report.analysed),
                       sum(o.seconds for o in report.analysed), _gaps(spans, started, ended),
                       _both_busy(spans, started, ended), pins)


def _summed(batches: list[_TimedBatch]) -> _TimedBatch:
    """The batches of one configuration added up (times), their extremes where a sum means nothing."""
    return _TimedBatch(
        sum(b.wall_s for b in batches), sum(b.task_s for b in batches), max(b.startup_s for b in batches),
        sum(b.task_cpu_s for b in batches), sum(b.run_s for b in batches), batches[0].gaps,
        sum(b.both_busy * b.wall_s for b in batches) / sum(b.wall_s for b in batches), max(b.pins for b in batches))


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
           {"recordings": 8, "frames": 800, "rounds": 2, "fault_recordings": 20, "fault_frames": 80,
            "compare_before": 0},
           quick={"recordings": 4, "frames": 200, "rounds": 1, "fault_recordings": 6})
def batch(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    from sam4em_live.batch import run_batch

    n, frames = integer(params, "recordings"), integer(params, "frames")
    archive = _archive(context.scratch / "equal", n, frames)
    warm_up = _archive(context.scratch / "warm-up", 1, 20) / "rec000.tif"
    # 1 worker, 2 workers, 2 workers, 1 worker, ...: a load that rises or falls during the run (a shared
    # machine) weighs on both alike; each batch on a fresh cluster and its own output folder
    variants = (False, True) if integer(params, "compare_before") else (False,)
    runs: dict[tuple[bool, int], list[_TimedBatch]] = {(v, w): [] for v in variants for w in (1, 2)}
    for k in range(integer(params, "rounds")):
        for earlier in (variants if k % 2 == 0 else variants[::-1]):
            for workers in ((1, 2) if k % 2 == 0 else (2, 1)):
                out = context.scratch / f"w{workers}-{k}{'-before' if earlier else ''}"
                runs[earlier, workers].append(_timed_batch(archive, out, workers, warm_up, earlier))
    one, two = _summed(runs[False, 1]), _summed(runs[False, 2])
    n *= len(runs[False, 1])  # recordings analysed by each configuration over the rounds
    gap, before, after = runs[False, 1][0].gaps

    faulty = _archive(context.scratch / "faulty", integer(params, "fault_recordings"), integer(params, "fault_frames"))
    (faulty / "corrupt.tif").write_bytes(b"not a TIFF file")
    (faulty / "corrupt.prompts.json").write_text(json.dumps(PROMPTS))
    out = context.scratch / "fault-run"
    killed: list[int] = []
    stop = threading.Event()
    victim = f"rec{integer(params, 'fault_recordings') // 2:03d}"
    killer = threading.Thread(target=_kill_when_started, args=(out / "state" / f"{victim}.attempts.jsonl",
                                                               killed, stop), daemon=True)
    killer.start()
    cluster, client, _ = _cluster(2, warm_up)
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
    compared: dict[str, Metric] = {}
    if True in variants:  # the same rounds with the earlier settings, interleaved with these
        old_one, old_two = _summed(runs[True, 1]), _summed(runs[True, 2])
        compared = {
            "before_one_worker_s": Metric(old_one.wall_s, "s", "lower"),
            "before_two_workers_s": Metric(old_two.wall_s, "s", "lower"),
            "before_speedup_2_vs_1": Metric(old_one.wall_s / old_two.wall_s, "x", "higher"),
            "before_task_cpu_per_wall": Metric(old_one.task_cpu_s / old_one.run_s, "cores", "none"),
            "before_cpu_s_per_recording": Metric(old_one.task_cpu_s / n, "s", "lower"),
        }
    return Measurement({
        **compared,
        "one_worker_s": Metric(one.wall_s, "s", "lower"),
        "two_workers_s": Metric(two.wall_s, "s", "lower"),
        "speedup_2_vs_1": Metric(one.wall_s / two.wall_s, "x", "higher"),
        # tasks in flight at once on 2 workers (Σ task time / wall): the scheduler keeps both busy; what that buys
        # in wall time is what the machine's CPU gives the batch
        "concurrency_2_workers": Metric(two.task_s / two.wall_s, "tasks", "higher"),
        # share of the 2-worker wall time with both worker processes inside a task (attempts logs, by pid)
        "both_workers_busy": Metric(two.both_busy, "fraction", "higher"),
        # a task on 2 workers over the same task on 1: 1.0 when the workers do not slow each other down (free
        # cores, no shared lock); ~2 when they share one core's worth of CPU
        "task_slowdown_2_vs_1": Metric(two.task_s / one.task_s, "x", "lower"),
        # the widest BLAS/OpenMP/numexpr pool a worker may start (its environment): 1 = pinned
        "worker_thread_pool_max": Metric(float(max(one.pins, two.pins)), "threads", "lower"),
        "cluster_startup_s": Metric(max(one.startup_s, two.startup_s), "s", "lower"),
        "overhead_per_recording_s": Metric((one.wall_s - one.task_s) / n, "s", "lower"),
        "task_s_per_recording": Metric(one.task_s / n, "s", "lower"),
        # the overhead's parts: between two tasks on a worker (scheduling proper), and run_batch's own work
        # before the first (inputs, fingerprints, submission) and after the last (tables)
        "gap_between_tasks_s": Metric(gap, "s", "lower"),
        "before_first_task_s": Metric(before, "s", "lower"),
        "after_last_task_s": Metric(after, "s", "lower"),
        # above 1: one recording already keeps more than one core busy (the service's threads), which caps what
        # a second worker can add on a 2-core machine
        "task_cpu_per_wall": Metric(one.task_cpu_s / one.run_s, "cores", "none"),
        # CPU a recording's run costs its worker (all its threads and child processes, the 1-worker batches): the
        # work two workers share out on two cores, less sensitive to a loaded machine than wall times
        "cpu_s_per_recording": Metric(one.task_cpu_s / n, "s", "lower"),
        "fault_good_analysed": count(len(report.analysed)),
        "fault_faults_reported": count(faults if killed else -1),
        "fault_recomputed_on_resume": count(len(resumed.analysed), better="lower"),
        "fault_resume_s": Metric(resume_wall, "s", "lower"),
    })
