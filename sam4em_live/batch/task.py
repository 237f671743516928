"""One recording of a batch, as a Dask task: the very pipeline of ``track`` (or of ``track --replay``).

It runs `service.runs.run_track` / `run_replay` into ``OUT/runs/<name>`` (nothing computed differently from
``sam4em-live track``), then adds the recording's partition to the batch's Parquet datasets and records the
fingerprint that lets a later batch skip it. Every file is written whole (temporary name, then rename) and the
state file last: a worker killed at any point leaves a recording that the next attempt simply redoes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from sam4em_live.batch.inputs import Recording

RUNS = "runs"
TRAJECTORIES = "trajectories"  # the Parquet dataset, one partition a recording (recording=<name>)
PARTICLES = "particles"  # per-particle statistics, partitioned alike
STATE = "state"  # <name>.json: fingerprint + outcome of a finished recording; <name>.attempts.jsonl
PARTITION_KEY = "recording"
#: Service settings of every batch recording on top of ``track``'s, none of which changes a result or a file's
#: content: masks.tif is written by the recorder's own thread instead of a child process (the same pages through
#: the same writer), so a recording keeps to about one core of its worker (docs/batch.md, "Clusters").
RUN_OVERRIDES: dict[str, Any] = {"recorder.mask_writer": "thread"}


class BatchTaskError(RuntimeError):
    """A recording whose run did not end complete (the message says why, from run.json)."""


@dataclass(frozen=True)
class BatchSettings:
    """What every recording of the batch runs with (the CLI's and `run_batch`'s options)."""

    backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None
    fps: float | None = None  # calibration for recordings whose metadata (and manifest row) lack it
    pixel_size_nm: float | None = None

    def digest_parts(self) -> dict[str, Any]:
        """What changes results: the config file by content, not by name."""
        config = self.config_path.read_text() if self.config_path is not None else None
        return {"backend": self.backend, "options": self.options, "config": config,
                "fps": self.fps, "pixel_size_nm": self.pixel_size_nm}


@dataclass(frozen=True)
class RecordingOutcome:
    """What a finished recording reports back to the client (and stores in its state file)."""

    name: str
    run_dir: str
    rows: int
    particles: int
    frames: int
    seconds: float
    attempts: int
    ensemble: dict[str, Any]
    cpu_seconds: float = 0.0  # the worker process's CPU time for it (all its threads, masks.tif's pages included)
    # CPU time of its child processes, where known: none but a backend in its own process (segmenter.own_process)
    child_cpu_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_path(out: Path, name: str) -> Path:
    """The state file of a finished recording (its fingerprint and outcome)."""
    return out / STATE / f"{name}.json"


def attempts_path(out: Path, name: str) -> Path:
    """The log of this batch's attempts at a recording (start, failed, done; a start alone: its worker died)."""
    return out / STATE / f"{name}.attempts.jsonl"


def partition(out: Path, dataset: str, name: str) -> Path:
    """A recording's partition of a dataset (Hive layout: pandas/pyarrow/dask read ``recording`` back)."""
    return out / dataset / f"{PARTITION_KEY}={name}"


def finished(out: Path, recording: Recording, fingerprint: str) -> RecordingOutcome | None:
    """The stored outcome if this recording's outputs are complete and its fingerprint unchanged, else None."""
    try:
        state = json.loads(state_path(out, recording.name).read_text())
        run = json.loads((out / RUNS / recording.name / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint or run.get("status") != "complete":
        return None
    if not (partition(out, TRAJECTORIES, recording.name) / "part-0.parquet").is_file():
        return None
    return RecordingOutcome(**state["outcome"])


def analyse_recording(recording: Recording, settings: BatchSettings, out: Path, fingerprint: str,
                      provenance: dict[str, str]) -> RecordingOutcome:
    """Run one recording through ``track``'s pipeline and add it to the batch's datasets (on a worker).

    A recording already finished with this fingerprint is not run again: its stored outcome is returned. The
    client submits only unfinished ones, but Dask may run a task once more after it finished (its result was
    held on a worker that died before the client took it): that costs a look at the state file, not a rerun.
    """
    done = finished(out, recording, fingerprint)
    if done is not None:
        return done
    start, cpu_start, child_start = time.perf_counter(), time.process_time(), _children_cpu_s()
    attempt = _log_attempt(out, recording.name, {"event": "start"})
    run_dir = out / RUNS / recording.name
    try:
        for stale in (state_path(out, recording.name), run_dir, partition(out, TRAJECTORIES, recording.name),
                      partition(out, PARTICLES, recording.name)):
            _remove(stale)  # an earlier attempt's leftovers (a lost worker, a changed input)
        _run(recording, settings, out, run_dir)
        outcome = _publish(recording, out, run_dir, fingerprint, provenance, attempt,
                           (time.perf_counter() - start, time.process_time() - cpu_start,
                            _children_cpu_s() - child_start))
    except BaseException as exc:
        _log_attempt(out, recording.name, {"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    _log_attempt(out, recording.name, {"event": "done", "seconds": outcome.seconds})
    return outcome


def _run(recording: Recording, settings: BatchSettings, out: Path, run_dir: Path) -> None:
    from sam4em_live.io.run_folder import RunFolder
    from sam4em_live.service.runs import run_replay, run_track

    (out / RUNS).mkdir(parents=True, exist_ok=True)
    if recording.replay is not None:
        run_replay(recording.path, recording.replay, run_dir, progress=False, overrides=RUN_OVERRIDES)
    else:
        prompts, overrides = recording.prompts, dict(RUN_OVERRIDES)
        if prompts is None:
            if not recording.discover:
                raise BatchTaskError(f"{recording.path}: no prompts (no <name>.prompts.json beside it, no manifest "
                                     "entry, no previous run); give some or ask for --discover")
            prompts = out / STATE / f"{recording.name}.no-prompts.json"  # discovery finds the particles
            prompts.write_text(json.dumps({"prompts": []}))
            overrides["discovery.mode"] = "auto"
        run_track(recording.path, prompts, run_dir, backend=settings.backend,
                  fps=recording.fps if recording.fps is not None else settings.fps,
                  pixel_size_nm=recording.pixel_size_nm if recording.pixel_size_nm is not None
                  else settings.pixel_size_nm,
                  config_path=settings.config_path, progress=False, overrides=overrides,
                  segmenter_options=dict(settings.options))
    folder = RunFolder.open(run_dir)
    if folder.status != "complete":
        raise BatchTaskError(f"{recording.name}: run ended {folder.status}: {folder.manifest.get('reason')}")


def _publish(recording: Recording, out: Path, run_dir: Path, fingerprint: str, provenance: dict[str, str],
             attempt: int, seconds: tuple[float, float, float]) -> RecordingOutcome:
    """The recording's Parquet partitions and ensemble row, then its state file (the mark of completion)."""
    from sam4em_live.io.run_folder import RunFolder

    folder = RunFolder.open(run_dir)
    loaded = folder.trajectories()
    table = loaded.table.copy()
    calibration = loaded.calibration
    table["pixel_size_nm"] = calibration.pixel_size_nm if calibration.pixel_size_nm is not None else math.nan
    table["fps"] = calibration.fps if calibration.fps is not None else math.nan
    columns = {"source_path": str(recording.path), "run_id": folder.manifest.get("run_id", recording.name),
               "prompts_origin": recording.prompts_origin, "fingerprint": fingerprint, **provenance}
    for key, value in columns.items():
        table[key] = value
    _write_parquet(table, partition(out, TRAJECTORIES, recording.name))
    ensemble, summary = _statistics(loaded, calibration)
    if summary is not None:
        _write_parquet(summary, partition(out, PARTICLES, recording.name))
    outcome = RecordingOutcome(
        name=recording.name, run_dir=str(run_dir), rows=len(table), particles=int(table["particle"].nunique()),
        frames=int(table["frame"].nunique()), seconds=round(seconds[0], 3), attempts=attempt,
        ensemble={"recording": recording.name, "pixel_size_nm": calibration.pixel_size_nm,
                  "fps": calibration.fps, **ensemble, **provenance},
        cpu_seconds=round(seconds[1], 3), child_cpu_seconds=round(seconds[2], 3))
    _write_whole(state_path(out, recording.name),
                 json.dumps({"fingerprint": fingerprint, "outcome": outcome.as_dict()}, indent=1, default=str))
    return outcome


def _statistics(loaded: Any, calibration: Any) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The recording's ensemble row (sam4em_live.analysis's fits) and per-particle table; a reason if too short."""
    from sam4em_live.analysis.analyze import compute

    try:
        result = compute(loaded, calibration)
    except ValueError as exc:  # too short for the statistics, no rows: the tracking itself still counts
        return {"analysis_error": str(exc)}, None
    fit, linear = result.ensemble_fit.as_dict(), result.ensemble_fit_linear.as_dict()
    row = {"particles": int(len(result.summary)), **{f"ensemble_{k}": v for k, v in fit.items()},
           "ensemble_linear_D": linear["D"], "ensemble_linear_D_err": linear["D_err"],
           "median_particle_D": float(result.summary["D"].median()) if "D" in result.summary else None,
           "analysis_error": None}
    return row, result.summary


def _children_cpu_s() -> float:
    """CPU time of this process's finished child processes (a run joins its children before it ends)."""
    try:
        import resource
    except ImportError:  # not on Windows: the children's share is then unknown (0)
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _write_parquet(table: pd.DataFrame, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-0.{os.getpid()}.parquet.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, folder / "part-0.parquet")


def _write_whole(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _log_attempt(out: Path, name: str, entry: dict[str, Any]) -> int:
    """Append to the recording's attempts log; returns the number of attempts started so far."""
    path = attempts_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**entry, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname()})
    with path.open("a") as handle:
        handle.write(line + "\n")
    return read_attempts(out, name)[0]


def read_attempts(out: Path, name: str) -> tuple[int, list[str]]:
    """(attempts started, why each earlier one ended short: its error, or 'worker lost' when it never ended)."""
    try:
        entries = [json.loads(line) for line in attempts_path(out, name).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return 0, []
    started, reasons, open_attempt = 0, [], False
    previous_pid, previous_host = None, None
    for entry in entries:
        if entry.get("event") == "start":
            if open_attempt:
                reasons.append(f"worker lost (pid {previous_pid} on {previous_host})")
            started, open_attempt = started + 1, True
            previous_pid, previous_host = entry.get("pid"), entry.get("host")
        elif entry.get("event") == "failed":
            reasons.append(str(entry.get("error")))
            open_attempt = False
        elif entry.get("event") == "done":
            open_attempt = False
    return started, reasons
