"""Open any trajectory source for analysis: our run folders and tables, SAM-EM folders, SAM4EM ``masks.npy``.

The foreign formats hold masks, not measurements, so they are measured here with `sam4em_live.measure`
(the same measurement as the live pipeline); our own files are read by `sam4em_live.io.run_folder` (run
folders) and `sam4em_live.io.trajectories` (tables). `load_for_analysis` also says what the run's ``t_s``
is (`sam4em_live.analysis.time_axis`) and drops a ``t_s`` that is not an acquisition time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam4em_live.analysis.time_axis import recorded_time_base, times_are_acquisition
from sam4em_live.frames import Calibration, TimeBase
from sam4em_live.io.run_folder import RunFolder
from sam4em_live.io.trajectories import TIME_COLUMN, Trajectories, read_table_file, table_from_measurements
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisInput:
    """Trajectories to analyse and the time base their run recorded (None: not a run folder)."""

    trajectories: Trajectories
    time_base: TimeBase | None = None


def _samem_index(folder: Path) -> dict[int, Path]:
    """Frame -> npz path from SAM-EM's ``index.jsonl`` (later lines win: SAM-EM appends on re-runs)."""
    index = folder / "index.jsonl"
    frames: dict[int, Path] = {}
    if index.is_file():
        for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                frames[int(record["frame_idx"])] = folder / str(record["npz"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{index}:{number}: not a SAM-EM index record ({exc})") from exc
        return frames
    for npz in sorted((folder / "npz").glob("*.npz")):
        digits = re.findall(r"\d+", npz.stem)
        if not digits:
            raise ValueError(f"cannot tell the frame index of {npz} (no index.jsonl, no digits in the name)")
        frames[int(digits[-1])] = npz
    return frames


def read_samem_run(folder: Path, calibration: Calibration | None = None) -> Trajectories:
    """Re-measure a SAM-EM output folder (``npz/######.npz`` + ``index.jsonl``).

    Each npz holds ``obj_ids`` (K,) and ``masks`` (K, H, W) uint8/bool, as
    SAM-EM's ``MaskComponent.propagate`` writes them. Every mask goes through
    `measure_mask` (largest component kept and flagged, empty = absent).
    """
    folder = Path(folder)
    calibration = calibration or Calibration()
    frames = _samem_index(folder)
    if not frames:
        raise FileNotFoundError(f"{folder} has no SAM-EM index.jsonl or npz/ files")
    measurements = []
    for frame, npz_path in sorted(frames.items()):
        with np.load(npz_path) as data:
            if "masks" not in data or "obj_ids" not in data:
                raise ValueError(f"{npz_path}: expected arrays 'obj_ids' and 'masks', found {list(data.keys())}")
            masks = np.asarray(data["masks"])
            ids = np.asarray(data["obj_ids"]).ravel()
        masks = masks.reshape((-1, *masks.shape[-2:])) if masks.ndim >= 2 else masks
        if masks.shape[0] != ids.size:
            raise ValueError(f"{npz_path}: {ids.size} obj_ids but {masks.shape[0]} masks")
        for pid, mask in zip(ids.tolist(), masks, strict=True):
            measurements.append(measure_mask(ParticleMask.from_full(int(pid), mask > 0, 1.0), frame))
    return Trajectories(table_from_measurements(measurements, calibration), calibration, str(folder))


def read_sam4em_masks(path: Path, calibration: Calibration | None = None) -> Trajectories:
    """Measure SAM4EM's ``masks.npy``: (frames, objects, H, W), object k is particle k + 1.

    A singleton axis after ``objects`` (SAM 2's (1, H, W) per object) is
    accepted. Frames are numbered from 0. The array is memory-mapped.
    """
    calibration = calibration or Calibration()
    stack = np.load(Path(path), mmap_mode="r")
    if stack.ndim == 5 and stack.shape[2] == 1:
        stack = stack[:, :, 0]
    if stack.ndim != 4:
        raise ValueError(f"{path}: expected (frames, objects, H, W), got shape {stack.shape}")
    measurements = [
        measure_mask(ParticleMask.from_full(obj + 1, np.asarray(stack[frame, obj]) > 0, 1.0), frame)
        for frame in range(stack.shape[0]) for obj in range(stack.shape[1])
    ]
    return Trajectories(table_from_measurements(measurements, calibration), calibration, str(path))


def load_for_analysis(path: Path, series: int | None = None) -> AnalysisInput:
    """Open whatever ``path`` is: a run directory, a SAM-EM folder, SAM4EM ``masks.npy`` or a table file.

    A run's ``t_s`` that is not an acquisition time (a replay recorded before ``run.json`` had a
    ``time_base``: the processing clock) is emptied, so nothing downstream reads it as one.

    A run (or table) of several series -- a camera restart, a new series id, a frame-size change --
    repeats frame numbers across them, so positions over time are analysed one series at a time:
    without ``series`` such a run is refused with a ValueError that lists its series.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"not found: {path}")
    if path.is_dir():
        if RunFolder.holds_trajectories(path):
            run = RunFolder.open(path)
            base = recorded_time_base(run.manifest)
            listed = run.series_list
            if series is None and len(listed) > 1:
                raise ValueError(_several_series(path, [
                    f"{e.get('series')} ({e.get('series_id')}, frames {e.get('frames')})" for e in listed]))
            if series is not None and not listed:
                raise ValueError(f"{path}: run.json lists no series; analyse it without a series")
            # One series: its own calibration (run.json series_list); the run's, when it has only one.
            loaded = run.trajectories(series=series) if series is not None else run.trajectories()
            return AnalysisInput(_without_processing_times(loaded, base), base)
        if (path / "index.jsonl").is_file() or (path / "npz").is_dir():
            return AnalysisInput(one_series(read_samem_run(path), series))
        raise ValueError(f"{path} is neither a run directory (trajectories.csv) nor a SAM-EM folder (index.jsonl)")
    if path.suffix == ".npy":
        return AnalysisInput(one_series(read_sam4em_masks(path), series))
    return AnalysisInput(one_series(Trajectories(read_table_file(path), Calibration(), str(path)), series))


def _several_series(source: object, names: list[str]) -> str:
    return (f"{source} holds {len(names)} series ({'; '.join(names)}): frame numbers repeat across them, so "
            "they are analysed one at a time -- choose one with --series K (Python: series=K)")


def one_series(loaded: Trajectories, series: int | None) -> Trajectories:
    """The rows of ``series`` of a table with a ``series`` column; a table of several series needs one."""
    table = loaded.table
    present = sorted(int(v) for v in table["series"].dropna().unique()) if "series" in table.columns else []
    if series is None:
        if len(present) > 1:
            raise ValueError(_several_series(loaded.source, [str(v) for v in present]))
        return loaded
    if series not in present and not (series == 0 and not present):
        raise ValueError(f"{loaded.source}: no series {series} (the table has {present or [0]})")
    if not present:
        return loaded
    return dataclasses.replace(loaded, table=table[table["series"] == series].reset_index(drop=True))


def load_trajectories(path: Path, series: int | None = None) -> Trajectories:
    """The trajectories of `load_for_analysis`."""
    return load_for_analysis(path, series).trajectories


def _without_processing_times(loaded: Trajectories, base: TimeBase | None) -> Trajectories:
    table = loaded.table
    if times_are_acquisition(base) or TIME_COLUMN not in table.columns or table[TIME_COLUMN].isna().all():
        return loaded
    log.warning("%s: t_s was recorded from the processing clock (a replay without a frame rate), not at "
                "acquisition; it is ignored", loaded.source)
    return dataclasses.replace(loaded, table=table.assign(**{TIME_COLUMN: np.nan}))
