"""Evaluate a recorded run folder against a ground-truth folder, frame by frame.

The run folder is read by `sam4em_live.io.run_folder.RunFolder`: ``masks.tif`` (a uint16 label
stack, one page per frame index, value = particle id; the pages of frames that had a result are scored)
with the frame of each page from ``run.json`` ``mask_frames`` (contiguous from 0 when absent), and ``trajectories.csv`` (frame,
particle, x, y) for the measured centroids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sam4em_live.evaluate.metrics import EvaluationReport, evaluate_pages
from sam4em_live.io.run_folder import MaskPages, RunFolder, RunFolderError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np


class EvaluationInputError(ValueError):
    """Inputs that cannot be evaluated together (missing files, mismatched shapes or frames)."""


def _open_run(run_dir: str | Path) -> tuple[RunFolder, MaskPages, pd.DataFrame | None]:
    """The run's folder, its mask pages and its trajectory table (None: centroids come from the masks)."""
    try:
        folder = RunFolder.open(run_dir)
        masks = folder.mask_pages()
    except FileNotFoundError:  # no folder, or a folder without masks
        raise EvaluationInputError(f"{run_dir}: no masks.tif (was the run recorded with masks?)") from None
    except RunFolderError as exc:
        raise EvaluationInputError(str(exc)) from None
    try:
        table = folder.trajectories().table if folder.trajectories_path is not None else None
    except ValueError:
        table = None  # an empty or foreign table: fall back to mask centroids
    return folder, masks, table


def evaluate_directories(run_dir: str | Path, gt_dir: str | Path,
                         on_page: Callable[[int, int], None] | None = None) -> EvaluationReport:
    """Evaluate a recorded run against a folder written by `sam4em-live simulate`, page by page.

    ``on_page(done, total)`` is called after each page is read (a progress bar).
    """
    import tifffile

    folder, masks, table = _open_run(run_dir)
    gt = Path(gt_dir)
    for name in ("gt_masks.tif", "gt_trajectories.csv"):
        if not (gt / name).is_file():
            raise EvaluationInputError(f"{gt}: missing {name} (not a folder written by `sam4em-live simulate`?)")
    gt_table = pd.read_csv(gt / "gt_trajectories.csv")
    meta = json.loads((gt / "meta.json").read_text()) if (gt / "meta.json").is_file() else {}
    with tifffile.TiffFile(masks.path) as pred_tif, tifffile.TiffFile(gt / "gt_masks.tif") as gt_tif:
        gt_pages = len(gt_tif.pages)
        gt_shape = tuple(int(v) for v in gt_tif.pages.first.shape[:2])
        if masks.page_shape != gt_shape:
            raise EvaluationInputError(f"frame shape differs: run masks {masks.page_shape} vs ground truth {gt_shape}")
        beyond = [f for f in masks.frames if not 0 <= f < gt_pages]
        if beyond:
            raise EvaluationInputError(f"run has frames {beyond[:5]}... beyond the {gt_pages} ground-truth frames")
        # pages of frames that had a result only: a frame dropped before segmentation has an empty page
        scored = masks.result_pages()

        def pages() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
            for done, (k, f) in enumerate(scored, 1):
                yield f, pred_tif.pages[k].asarray(), gt_tif.pages[f].asarray()
                if on_page is not None:
                    on_page(done, len(scored))

        report = evaluate_pages(pages(), table, gt_table)
    backend = folder.manifest.get("backend")
    report.extras.update({
        "gt_frames": gt_pages, "frames_not_processed": gt_pages - len({f for _, f in masks.result_pages()}),
        "preset": meta.get("preset"),
        "backend": backend.get("backend") if isinstance(backend, dict) else backend,
        "random_weights": backend.get("random_weights") if isinstance(backend, dict) else None,
    })
    return report
