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

import pandas as pd

from sam4em_live.evaluate.metrics import EvaluationReport, evaluate_pages


class EvaluationInputError(ValueError):
    """Inputs that cannot be evaluated together (missing files, mismatched shapes or frames)."""


@dataclass(frozen=True)
class RecordedRun:
    """What a run directory says about its masks (pages are read lazily)."""

    masks_path: Path
    pages: int
    page_shape: tuple[int, int]
    frames: list[int]  # frame index of each page
    table: pd.DataFrame | None
    info: dict[str, Any]


def load_run(run_dir: str | Path) -> RecordedRun:
    import tifffile

    run = Path(run_dir)
    masks_path = run / "masks.tif"
    if not masks_path.is_file():
        raise EvaluationInputError(f"{run}: no masks.tif (was the run recorded with masks?)")
    with tifffile.TiffFile(masks_path) as tif:
        pages = len(tif.pages)
        page_shape = tuple(int(v) for v in tif.pages.first.shape[:2])
    info: dict[str, Any] = {}
    if (run / "run.json").is_file():
        info = json.loads((run / "run.json").read_text())
    table = pd.read_csv(run / "trajectories.csv") if (run / "trajectories.csv").is_file() else None
    if table is not None and not {"frame", "particle", "x", "y"} <= set(table.columns):
        table = None  # an empty or foreign table: fall back to mask centroids
    frames = _mask_frames(info.get("mask_frames"), pages, run)
    if len(frames) != pages:
        raise EvaluationInputError(
            f"{run}: run.json mask_frames lists {len(frames)} frames but masks.tif has {pages} pages")
    return RecordedRun(masks_path, pages, page_shape, frames, table, info)  # type: ignore[arg-type]


def _mask_frames(raw: Any, pages: int, run: Path) -> list[int]:
    """Frame index of each page: a plain list, inclusive ``[first, last]`` ranges (the recorder's
    encoding), or contiguous from 0 when absent."""
    if raw is None:
        return list(range(pages))
    if not isinstance(raw, list):
        raise EvaluationInputError(f"{run}: run.json mask_frames must be a list, got {type(raw).__name__}")
    try:
        if all(isinstance(item, list) for item in raw):
            from sam4em_live.io.run_manifest import expand_ranges

            return expand_ranges(raw)
        return [int(f) for f in raw]
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{run}: cannot read run.json mask_frames ({exc})") from None


def evaluate_directories(run_dir: str | Path, gt_dir: str | Path) -> EvaluationReport:
    """Evaluate a recorded run against a folder written by `sam4em-live simulate`, page by page."""
    import tifffile

    run = load_run(run_dir)
    gt = Path(gt_dir)
    for name in ("gt_masks.tif", "gt_trajectories.csv"):
        if not (gt / name).is_file():
            raise EvaluationInputError(f"{gt}: missing {name} (not a folder written by `sam4em-live simulate`?)")
    gt_table = pd.read_csv(gt / "gt_trajectories.csv")
    meta = json.loads((gt / "meta.json").read_text()) if (gt / "meta.json").is_file() else {}
    with tifffile.TiffFile(run.masks_path) as pred_tif, tifffile.TiffFile(gt / "gt_masks.tif") as gt_tif:
        gt_pages = len(gt_tif.pages)
        gt_shape = tuple(int(v) for v in gt_tif.pages.first.shape[:2])
        if run.page_shape != gt_shape:
            raise EvaluationInputError(f"frame shape differs: run masks {run.page_shape} vs ground truth {gt_shape}")
        beyond = [f for f in run.frames if not 0 <= f < gt_pages]
        if beyond:
            raise EvaluationInputError(f"run has frames {beyond[:5]}... beyond the {gt_pages} ground-truth frames")
        pages = ((f, pred_tif.pages[k].asarray(), gt_tif.pages[f].asarray()) for k, f in enumerate(run.frames))
        report = evaluate_pages(pages, run.table, gt_table)
    backend = run.info.get("backend")
    report.extras.update({
        "gt_frames": gt_pages, "frames_not_processed": gt_pages - len(set(run.frames)),
        "preset": meta.get("preset"),
        "backend": backend.get("backend") if isinstance(backend, dict) else backend,
        "random_weights": backend.get("random_weights") if isinstance(backend, dict) else None,
    })
    return report
