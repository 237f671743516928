"""Load a recorded run and a ground-truth folder and align them frame by frame.

A run directory (written by the recorder) holds ``masks.tif`` — a uint16
label stack, one page per processed frame, value = particle id — and
``run.json``, whose optional ``mask_frames`` lists the frame index of each
page (contiguous from 0 when absent). ``trajectories.csv`` (frame, particle,
x, y) gives the measured centroids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam4em_live.evaluate.metrics import EvaluationReport, evaluate_run


class EvaluationInputError(ValueError):
    """Inputs that cannot be evaluated together (missing files, mismatched shapes or frames)."""


@dataclass(frozen=True)
class RecordedRun:
    labels: np.ndarray  # (N, H, W)
    frames: list[int]  # frame index of each page
    table: pd.DataFrame | None
    info: dict[str, Any]


def load_run(run_dir: str | Path) -> RecordedRun:
    import tifffile

    run = Path(run_dir)
    masks_path = run / "masks.tif"
    if not masks_path.is_file():
        raise EvaluationInputError(f"{run}: no masks.tif (was the run recorded with masks?)")
    labels = tifffile.imread(masks_path)
    labels = labels[None] if labels.ndim == 2 else labels
    info: dict[str, Any] = {}
    if (run / "run.json").is_file():
        info = json.loads((run / "run.json").read_text())
    table = pd.read_csv(run / "trajectories.csv") if (run / "trajectories.csv").is_file() else None
    frames = _mask_frames(info.get("mask_frames"), len(labels), run)
    if len(frames) != len(labels):
        raise EvaluationInputError(
            f"{run}: run.json mask_frames lists {len(frames)} frames but masks.tif has {len(labels)} pages")
    return RecordedRun(labels, frames, table, info)


def _mask_frames(raw: Any, pages: int, run: Path) -> list[int]:
    """Frame index of each page: a plain list, inclusive ``[first, last]`` ranges (the recorder's
    encoding), or contiguous from 0 when absent."""
    if raw is None:
        return list(range(pages))
    if not isinstance(raw, list):
        raise EvaluationInputError(f"{run}: run.json mask_frames must be a list, got {type(raw).__name__}")
    try:
        if all(isinstance(item, list) for item in raw):
            from sam4em_live.sinks.run_manifest import expand_ranges

            return expand_ranges(raw)
        return [int(f) for f in raw]
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{run}: cannot read run.json mask_frames ({exc})") from None


def evaluate_directories(run_dir: str | Path, gt_dir: str | Path) -> EvaluationReport:
    """Evaluate a recorded run against a folder written by `sam4em-live simulate`."""
    from sam4em_live.sim.outputs import read_ground_truth

    run = load_run(run_dir)
    try:
        gt_labels, gt_table, meta = read_ground_truth(gt_dir)
    except FileNotFoundError as exc:
        raise EvaluationInputError(str(exc)) from None
    if run.labels.shape[1:] != gt_labels.shape[1:]:
        raise EvaluationInputError(
            f"frame shape differs: run masks {run.labels.shape[1:]} vs ground truth {gt_labels.shape[1:]}")
    beyond = [f for f in run.frames if not 0 <= f < len(gt_labels)]
    if beyond:
        raise EvaluationInputError(
            f"run has frames {beyond[:5]}... beyond the {len(gt_labels)} ground-truth frames")
    report = evaluate_run(run.labels, gt_labels[run.frames], run.table, gt_table, frame_indices=run.frames)
    report.extras.update({
        "gt_frames": int(len(gt_labels)), "frames_not_processed": int(len(gt_labels) - len(set(run.frames))),
        "preset": meta.get("preset"), "backend": (run.info.get("segmenter") or {}).get("backend")
        if isinstance(run.info.get("segmenter"), dict) else run.info.get("backend"),
    })
    return report
