"""`run_batch`: a batch of recordings on a ``dask.distributed`` cluster, one recording a task.

A ``LocalCluster`` of process workers sized to the machine unless a scheduler address is given. Retries are
bounded both ways a recording can fail: an exception in its task (a bad file) is retried ``retries`` times
(Dask's ``retries=``), a worker that dies under it (killed, out of memory) is forgiven ``retries`` times (the
scheduler's ``allowed-failures``; a remote scheduler keeps its own setting). One recording's failure never stops
the others; the `BatchReport` names each failure with its reason.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sam4em_live.batch.fingerprint import code_version, config_digest, fingerprint
from sam4em_live.batch.inputs import Recording, expand_inputs
from sam4em_live.batch.task import (
    PARTICLES,
    STATE,
    TRAJECTORIES,
    BatchSettings,
    RecordingOutcome,
    analyse_recording,
    attempts_path,
    finished,
    read_attempts,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from distributed import Client

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble.csv"  # one row per recording: the ensemble tMSD fit and how the recording was made
SUMMARY = "batch.json"
NO_PROMPTS = ("no prompts: no <name>.prompts.json beside it, no manifest entry, no previous run folder "
              "(--replay-from); give some, or --discover")


@dataclass(frozen=True)
class RecordingFailure:
    """A recording the batch could not analyse, why (the last attempt's error) and after how many attempts."""

    name: str
    path: str
    reason: str
    attempts: int


@dataclass(frozen=True)
class BatchReport:
    """What a batch did: analysed now, skipped as unchanged, failed (with reasons), retried, and where."""

    out: Path
    analysed: tuple[RecordingOutcome, ...]
    skipped: tuple[RecordingOutcome, ...]
    failed: tuple[RecordingFailure, ...]
    retried: dict[str, list[str]] = field(default_factory=dict)  # name -> why earlier attempts ended short
    seconds: float = 0.0
    workers: int = 0

    @property
    def trajectories(self) -> Path:
        return self.out / TRAJECTORIES

    @property
    def ensemble(self) -> Path:
        return self.out / ENSEMBLE

    def lines(self) -> list[str]:
        """The summary printed at the end of ``sam4em-live batch``."""
        total = len(self.analysed) + len(self.skipped) + len(self.failed)
        out = [f"{total} recordings: {len(self.analysed)} analysed, {len(self.skipped)} unchanged (skipped), "
               f"{len(self.failed)} failed; {self.seconds:.1f} s on {self.workers} workers"]
        out += [f"  retried {name}: {'; '.join(reasons)}" for name, reasons in sorted(self.retried.items())]
        out += [f"  FAILED {f.name} ({f.path}) after {f.attempts} attempt(s): {f.reason}" for f in self.failed]
        out += [f"trajectories: {self.trajectories} (Parquet, partitioned by recording)",
                f"ensemble statistics: {self.ensemble}"]
        return out


def run_batch(
    inputs: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    config: str | Path | None = None,
    fps: float | None = None,
    pixel_size_nm: float | None = None,
    replay_from: str | Path | None = None,
    discover: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    resources: Mapping[str, float] | None = None,
    retries: int = 2,
    progress: bool | Callable[[int, int], None] = True,
    client: Client | None = None,
) -> BatchReport:
    """Analyse every recording of ``inputs`` into ``out`` on a Dask cluster (docs/batch.md); see `BatchReport`."""
    start = time.perf_counter()
    out = Path(out).absolute()
    listed = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    recordings = expand_inputs(listed, Path(replay_from) if replay_from else None, discover)
    settings = BatchSettings(backend=backend, options=dict(options or {}),
                             config_path=Path(config).absolute() if config else None, fps=fps,
                             pixel_size_nm=pixel_size_nm)
    version, digest = code_version(), config_digest(settings.digest_parts())
    provenance = {"code_version": version, "config_digest": digest, "backend": backend or "embedded"}
    prints = {r.name: fingerprint(r, digest, version) for r in recordings}
    skipped: list[RecordingOutcome] = []
    todo: list[Recording] = []
    unprompted: list[RecordingFailure] = []  # refused before any work: a retry could not help
    for r in recordings:
        done = finished(out, r, prints[r.name])
        if done is not None:
            skipped.append(done)
        elif r.prompts is None and r.replay is None and not r.discover:
            unprompted.append(RecordingFailure(r.name, str(r.path), NO_PROMPTS, 0))
        else:
            todo.append(r)
    log.info("%d recordings: %d unchanged since the last batch, %d to analyse (inputs and fingerprints: %.2f s)",
             len(recordings), len(skipped), len(todo), time.perf_counter() - start)
    (out / STATE).mkdir(parents=True, exist_ok=True)
    for r in todo:  # this batch's attempts only
        attempts_path(out, r.name).unlink(missing_ok=True)
    task_resources = dict(resources) if resources else _gpu_resources(settings)
    analysed, failed, n_workers = _run_tasks(todo, settings, out, prints, provenance, scheduler, workers,
                                             task_resources, retries, progress, client)
    retried = {name: reasons for name in (a.name for a in analysed)
               if (reasons := read_attempts(out, name)[1])}
    report = BatchReport(out, tuple(analysed), tuple(skipped), (*unprompted, *failed), retried,
                         round(time.perf_counter() - start, 3), n_workers)
    _write_tables(report)
    return report


def _gpu_resources(settings: BatchSettings) -> dict[str, float]:
    """A GPU backend's task asks for one GPU of a worker's ``--resources GPU=n``; CPU backends ask for nothing."""
    device = str(settings.options.get("device", ""))
    return {"GPU": 1} if device.startswith("cuda") else {}


#: Set in each local worker process before it starts (so before numpy loads): one thread per BLAS/OpenMP/numexpr
#: pool. A worker runs one recording on one Dask thread, and two workers on two cores must not each start a
#: pool of threads as wide as the machine (they would compete for the same cores). Dask's defaults pin the
#: first three already; the rest are added. A remote cluster's workers keep their own environment (docs/batch.md).
WORKER_THREAD_PINS: dict[str, int] = {
    "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1, "NUMEXPR_NUM_THREADS": 1,
    "NUMEXPR_MAX_THREADS": 1, "VECLIB_MAXIMUM_THREADS": 1, "NUMBA_NUM_THREADS": 1,
}


#: Dask's own periodic work, made rare: a batch's tasks are seconds long and nobody watches a profile of them.
#: With Dask's defaults an idle local cluster of 2 workers kept 0.12 of a core busy (each worker's event loop
#: ticking every 20 ms, memory polled every 100 ms, system metrics every 500 ms) and each busy worker sampled
#: its task's stack every 10 ms for the dashboard's profile; with these, 0.008 of a core. One task at a time a
#: worker (``worker-saturation`` 1.0): the next recording waits on the scheduler, not behind another on a worker
#: that may finish later (the last tasks then spread over every free worker).
QUIET_WORKERS: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.worker-saturation": 1.0,
}


def _cluster_config(retries: int) -> dict[str, Any]:
    """Dask settings of a batch (the client's settings apply to a local cluster's scheduler and workers).

    Worker processes may have children (a recording's segmenter may run in one), a lost worker costs its task
    no more tries than an exception would, each local worker's thread pools are pinned, and Dask's own periodic
    work is rare (`QUIET_WORKERS`).
    """
    import dask

    environ = {**(dask.config.get("distributed.nanny.pre-spawn-environ", default=None) or {}), **WORKER_THREAD_PINS}
    return {"distributed.worker.daemon": False, "distributed.scheduler.allowed-failures": retries,
            "distributed.nanny.pre-spawn-environ": environ, **QUIET_WORKERS}


def start_local_cluster(n_workers: int, gpu: bool = False, retries: int = 2) -> tuple[Any, Client]:
    """(cluster, client) of ``n_workers`` process workers, one thread each, as a batch runs on by default.

    Separate processes, so two recordings never share an interpreter lock; one Dask thread per worker, so a
    worker runs one recording at a time (its service's own threads are the recording's); thread pools pinned
    (`WORKER_THREAD_PINS`); ``gpu``: each worker offers the resource ``GPU=1``. The caller closes both.
    """
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(_cluster_config(retries)):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               resources={"GPU": 1} if gpu else None, dashboard_address=":0",
                               silence_logs=logging.CRITICAL)
        try:
            return cluster, Client(cluster)
        except BaseException:
            cluster.close()
            raise


def _run_tasks(todo: list[Recording], settings: BatchSettings, out: Path, prints: dict[str, str],
               provenance: dict[str, str], scheduler: str | None, workers: int | None,
               resources: dict[str, float], retries: int, progress: bool | Callable[[int, int], None],
               client: Client | None) -> tuple[list[RecordingOutcome], list[RecordingFailure], int]:
    if not todo:
        return [], [], 0
    import dask
    from distributed import Client, as_completed

    with dask.config.set(_cluster_config(retries)):
        owned: list[Any] = []
        if client is None:
            if scheduler:
                client = Client(scheduler)
            else:
                cluster, client = start_local_cluster(workers or os.cpu_count() or 1, bool(resources.get("GPU")),
                                                      retries)
                owned.append(cluster)
            owned.insert(0, client)
        try:
            n_workers = len(client.scheduler_info().get("workers", {}))
            log.info("%d recordings on %d workers (scheduler %s; Dask's dashboard: %s)", len(todo), n_workers,
                     client.scheduler.address if client.scheduler else "?", client.dashboard_link)
            futures = {client.submit(analyse_recording, r, settings, out, prints[r.name], provenance,
                                     key=f"recording-{r.name}-{prints[r.name][:12]}", retries=retries,
                                     resources=resources or None, pure=False): r for r in todo}
            analysed, failed = [], []
            bar = _progress_bar(len(todo), progress)
            for future in as_completed(futures):
                r = futures.pop(future)
                try:
                    analysed.append(future.result())
                except Exception as exc:  # a failure of this recording only: reported, the others go on
                    failed.append(_failure(out, r, exc))
                    log.warning("%s failed: %s", r.name, failed[-1].reason)
                # Let the scheduler forget it now: a result held for this client on a worker that dies later
                # in the batch would otherwise be recomputed (the recording run again) to keep it available.
                future.release()
                bar(len(analysed) + len(failed), len(todo))
            return analysed, failed, n_workers
        finally:
            for thing in owned:
                thing.close()


def _failure(out: Path, r: Recording, exc: BaseException) -> RecordingFailure:
    started, reasons = read_attempts(out, r.name)
    if type(exc).__name__ == "KilledWorker":
        reason = f"worker lost on every attempt ({'; '.join(reasons) or exc})"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return RecordingFailure(r.name, str(r.path), reason, max(started, 1))


def _progress_bar(total: int, progress: bool | Callable[[int, int], None]) -> Callable[[int, int], None]:
    if callable(progress):
        return progress
    if not progress:
        return lambda done, total: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="recording", desc="batch")

    def update(done: int, total: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update


def _write_tables(report: BatchReport) -> None:
    """The ensemble table of every recording finished (now or before) and the batch summary."""
    rows = [o.ensemble for o in (*report.skipped, *report.analysed)]
    table = pd.DataFrame(rows).sort_values("recording") if rows else pd.DataFrame()
    table.to_csv(report.out / ENSEMBLE, index=False)
    summary = {
        "analysed": [o.name for o in report.analysed], "skipped": [o.name for o in report.skipped],
        "failed": [{"name": f.name, "path": f.path, "reason": f.reason, "attempts": f.attempts}
                   for f in report.failed],
        "retried": report.retried, "seconds": report.seconds, "workers": report.workers,
        "datasets": {"trajectories": TRAJECTORIES, "particles": PARTICLES, "ensemble": ENSEMBLE},
    }
    (report.out / SUMMARY).write_text(json.dumps(summary, indent=1))
