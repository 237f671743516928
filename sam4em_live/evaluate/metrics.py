"""Evaluate a predicted label video against ground truth (J, F, J&F, centroids, identities).

Label videos are (T, H, W) integer arrays: value = particle id, 0 = background.
Predicted ids are expected to be the ground-truth ids (prompts carry them), so
particle k is scored against ground-truth particle k. A particle is scored on
every frame where it is present in the truth or in the prediction; frames
where it is absent from both are not counted (DAVIS would score them 1).

Aggregation follows DAVIS: per particle, the mean over its frames; overall,
the mean over particles; J&F = (J + F) / 2. Scores are percentages (0–100).

F is reported twice: ``F`` at DAVIS' tolerance (a fraction of the image diagonal, 12 px at 1024²,
which saturates F at 100 for particles a few tens of pixels across) and ``F_size`` at a tolerance
tied to the particle's size (`sam4em_live.evaluate.masks.size_tolerance_px`: 0.1 × the true mask's
equivalent diameter, at least 1 px), with ``JF_size`` = (J + F_size) / 2.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from sam4em_live.evaluate.masks import (
    SIZE_TOLERANCE_FRACTION,
    boundary_f_at,
    boundary_tolerance_px,
    size_tolerance_px,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

PER_FRAME_COLUMNS = (
    "frame", "particle", "gt_present", "pred_present", "J", "F", "JF", "centroid_error_px", "swapped_to",
    "F_size", "JF_size", "size_tolerance_px",
)

#: How the size-tied boundary tolerance is chosen (the summary and the docs say the same).
SIZE_TOLERANCE_RULE = (f"max(1 px, {SIZE_TOLERANCE_FRACTION:g} x equivalent diameter 2*sqrt(area/pi) of the "
                       "true mask on that frame; of the predicted mask where the truth is empty)")


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of one run (see module docstring). ``per_frame`` is long format (one row per particle per frame)."""

    per_particle: pd.DataFrame
    per_frame: pd.DataFrame
    n_frames: int
    shape: tuple[int, int]
    boundary_tolerance_px: int
    extras: dict[str, Any] = field(default_factory=dict)

    def frame_means(self) -> pd.DataFrame:
        """Per frame: mean J, F, J&F (and F, J&F at the size-tied tolerance) over the particles scored on that frame."""
        scored = self.per_frame.dropna(subset=["J"])
        return scored.groupby("frame")[["J", "F", "JF", "F_size", "JF_size"]].mean().reset_index()

    def summary(self) -> dict[str, Any]:
        """Overall scores over ground-truth particles; predicted ids absent from the truth count as extras."""
        pp = self.per_particle[self.per_particle["in_truth"]]
        errors = self.per_frame["centroid_error_px"].dropna()
        j = float(pp["J"].mean()) if len(pp) else math.nan
        f = float(pp["F"].mean()) if len(pp) else math.nan
        f_size = float(pp["F_size"].mean()) if len(pp) else math.nan
        return {
            "J": j, "F": f, "J&F": (j + f) / 2, "F_size": f_size, "J&F_size": (j + f_size) / 2,
            "centroid_error_px_median": float(errors.median()) if len(errors) else math.nan,
            "centroid_error_px_mean": float(errors.mean()) if len(errors) else math.nan,
            "missed_frames": int(pp["missed_frames"].sum()) if len(pp) else 0,
            "false_positive_frames": int(pp["false_positive_frames"].sum()) if len(pp) else 0,
            "identity_switches": int(pp["identity_switches"].sum()) if len(pp) else 0,
            "particles": len(pp), "extra_particles": int((~self.per_particle["in_truth"]).sum()),
            "frames": self.n_frames,
            "boundary_tolerance_px": self.boundary_tolerance_px,
            "size_tolerance_px_median": float(self.per_frame["size_tolerance_px"].median())
            if len(self.per_frame) else math.nan,
            "size_tolerance_rule": SIZE_TOLERANCE_RULE, **self.extras,
        }

    def to_json(self) -> str:
        """Summary, per-particle and per-frame tables as JSON (NaN → null)."""
        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(df.to_json(orient="records"))

        payload = {"summary": _finite(self.summary()), "per_particle": records(self.per_particle),
                   "per_frame": records(self.frame_means()), "per_particle_frame": records(self.per_frame)}
        return json.dumps(payload, indent=1)

    def table(self) -> str:
        """Plain-text per-particle table plus the overall line."""
        cols = ["particle", "frames_scored", "J", "F", "JF", "F_size", "JF_size", "centroid_error_px_median",
                "missed_frames",
                "false_positive_frames", "identity_switches"]
        text = self.per_particle[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}")
        s = self.summary()
        return (f"{text}\nJ&F {s['J&F']:.2f}  J {s['J']:.2f}  F {s['F']:.2f}  "
                f"F_size {s['F_size']:.2f}  J&F_size {s['J&F_size']:.2f} (boundary tol median "
                f"{s['size_tolerance_px_median']:.2f} px)  "
                f"median centroid error {s['centroid_error_px_median']:.2f} px  missed {s['missed_frames']}  "
                f"id switches {s['identity_switches']}  ({s['frames']} frames, boundary tol "
                f"{self.boundary_tolerance_px} px)")


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def evaluate_run(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    pred_table: pd.DataFrame | None = None,
    gt_table: pd.DataFrame | None = None,
    frame_indices: Sequence[int] | None = None,
) -> EvaluationReport:
    """Score ``pred_labels`` against ``gt_labels`` (both (T, H, W), aligned frame by frame).

    Parameters
    ----------
    pred_table, gt_table
        Optional trajectory tables (``frame, particle, x, y`` in pixels). When
        given, their centroids are used for the centroid error instead of mask
        centroids (the truth table holds exact centroids even for particles
        partly outside the field).
    frame_indices
        Original frame number of each of the T frames (default 0..T-1); tables are
        looked up by it and reports use it.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape or pred_labels.ndim != 3:
        raise ValueError(f"need two (T, H, W) label stacks of one shape, got {pred_labels.shape} and {gt_labels.shape}")
    frames = list(range(len(gt_labels))) if frame_indices is None else [int(f) for f in frame_indices]
    if len(frames) != len(gt_labels):
        raise ValueError(f"{len(frames)} frame indices for {len(gt_labels)} frames")
    pages = ((frame, pred_labels[t], gt_labels[t]) for t, frame in enumerate(frames))
    return evaluate_pages(pages, pred_table, gt_table)


def evaluate_pages(
    pages: Iterable[tuple[int, np.ndarray, np.ndarray]],
    pred_table: pd.DataFrame | None = None,
    gt_table: pd.DataFrame | None = None,
) -> EvaluationReport:
    """Like `evaluate_run`, from ``(frame_index, pred_2d, gt_2d)`` triples read one at a time.

    Long runs never need both stacks in memory.
    """
    pred_xy = _table_centroids(pred_table)
    gt_xy = _table_centroids(gt_table)
    rows: list[dict[str, Any]] = []
    gt_ids: set[int] = set()
    shape: tuple[int, int] | None = None
    n_frames = 0
    for frame, pred, gt in pages:
        pred, gt = np.asarray(pred), np.asarray(gt)
        if shape is None:
            shape = (int(gt.shape[0]), int(gt.shape[1]))
        if pred.shape != shape or gt.shape != shape:
            raise ValueError(f"frame {frame}: label shapes {pred.shape} / {gt.shape}, expected {shape}")
        frame_gt_ids = _ids(gt)
        gt_ids.update(frame_gt_ids)
        ids = sorted(set(frame_gt_ids) | set(_ids(pred)))
        rows.extend(_score_frame(int(frame), pred, gt, ids, boundary_tolerance_px(shape), pred_xy, gt_xy))
        n_frames += 1
    if shape is None:
        raise ValueError("nothing to evaluate: no frames")
    per_frame = pd.DataFrame(rows, columns=list(PER_FRAME_COLUMNS))
    per_particle = _per_particle(per_frame, sorted(gt_ids))
    return EvaluationReport(per_particle, per_frame, n_frames, shape, boundary_tolerance_px(shape))


def _ids(labels: np.ndarray) -> list[int]:
    """Non-zero label values present (bincount: faster than np.unique on label images)."""
    if labels.size == 0:
        return []
    if labels.min() < 0:
        raise ValueError("label images must not hold negative values")
    present = np.flatnonzero(np.bincount(labels.ravel()))
    return [int(v) for v in present if v != 0]


def _table_centroids(table: pd.DataFrame | None) -> dict[tuple[int, int], tuple[float, float]]:
    if table is None or len(table) == 0:
        return {}
    frames, particles = table["frame"].to_numpy(dtype=np.int64), table["particle"].to_numpy(dtype=np.int64)
    xs, ys = table["x"].to_numpy(dtype=np.float64), table["y"].to_numpy(dtype=np.float64)
    return {(int(f), int(p)): (float(x), float(y)) for f, p, x, y in zip(frames, particles, xs, ys, strict=True)}


def _score_frame(
    frame: int, pred: np.ndarray, gt: np.ndarray, ids: list[int], tol: int,
    pred_xy: dict[tuple[int, int], tuple[float, float]], gt_xy: dict[tuple[int, int], tuple[float, float]],
) -> list[dict[str, Any]]:
    n = len(ids)
    lut = np.zeros(int(max(ids, default=0)) + 1, dtype=np.intp)
    lut[ids] = np.arange(1, n + 1)
    p_idx = lut[np.minimum(pred, lut.size - 1)]
    g_idx = lut[np.minimum(gt, lut.size - 1)]
    counts = np.bincount((p_idx * (n + 1) + g_idx).ravel(), minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
    area_p, area_g = counts.sum(axis=1), counts.sum(axis=0)
    present = [i for i in range(1, n + 1) if area_p[i] or area_g[i]]
    if not present:
        return []
    p_cent = _centroids(p_idx, n, area_p)
    g_cent = _centroids(g_idx, n, area_g)
    out = []
    for i in present:
        pc, gc = p_cent[i], g_cent[i]
        pid = ids[i - 1]
        inter = counts[i, i]
        union = area_p[i] + area_g[i] - inter
        j = inter / union
        has_p, has_g = bool(area_p[i]), bool(area_g[i])
        size_tol = size_tolerance_px(area_g[i] if has_g else area_p[i])
        f, f_size = boundary_f_at(p_idx == i, g_idx == i, (tol, size_tol)) if has_p and has_g else (0.0, 0.0)
        err = math.nan
        if has_p and has_g:
            px, py = pred_xy.get((frame, pid), (pc[1], pc[0]))
            gx, gy = gt_xy.get((frame, pid), (gc[1], gc[0]))
            err = math.hypot(px - gx, py - gy)
        out.append({
            "frame": frame, "particle": pid, "gt_present": has_g, "pred_present": has_p,
            "J": 100.0 * j, "F": 100.0 * f, "JF": 50.0 * (j + f), "centroid_error_px": err,
            "swapped_to": _swapped_to(counts, area_p, area_g, i, ids) if has_p else 0,
            "F_size": 100.0 * f_size, "JF_size": 50.0 * (j + f_size), "size_tolerance_px": size_tol,
        })
    return out


def _centroids(index: np.ndarray, n: int, areas: np.ndarray) -> np.ndarray:
    """(n + 1, 2) array of (row, column) mask centroids per label index (NaN where empty)."""
    rows, cols = index.shape
    flat = index.ravel()
    y = np.bincount(flat, weights=np.repeat(np.arange(rows, dtype=np.float64), cols), minlength=n + 1)
    x = np.bincount(flat, weights=np.tile(np.arange(cols, dtype=np.float64), rows), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.column_stack([y / areas, x / areas])


def _swapped_to(counts: np.ndarray, area_p: np.ndarray, area_g: np.ndarray, i: int, ids: list[int]) -> int:
    """Ground-truth id that prediction ``i`` overlaps better than its own (0 if none)."""
    inter = counts[i, 1:]
    iou = inter / np.maximum(area_p[i] + area_g[1:] - inter, 1)
    best = int(np.argmax(iou)) + 1
    if best != i and iou[best - 1] > 0 and iou[best - 1] > iou[i - 1]:
        return ids[best - 1]
    return 0


def _per_particle(per_frame: pd.DataFrame, gt_ids: list[int]) -> pd.DataFrame:
    rows = []
    for key, group in per_frame.groupby("particle", sort=True):
        pid = int(cast("float", key))  # the stub types group keys as any scalar; particle ids are numbers
        group = group.sort_values("frame")
        swapped = (group["swapped_to"] != 0).to_numpy()
        switches = int(np.count_nonzero(swapped[1:] & ~swapped[:-1]) + (1 if swapped.size and swapped[0] else 0))
        errors = group["centroid_error_px"].dropna()
        rows.append({
            "particle": pid, "in_truth": pid in gt_ids,
            "frames_gt": int(group["gt_present"].sum()), "frames_scored": len(group),
            "J": float(group["J"].mean()), "F": float(group["F"].mean()), "JF": float(group["JF"].mean()),
            "F_size": float(group["F_size"].mean()), "JF_size": float(group["JF_size"].mean()),
            "centroid_error_px_median": float(errors.median()) if len(errors) else math.nan,
            "centroid_error_px_mean": float(errors.mean()) if len(errors) else math.nan,
            "missed_frames": int((group["gt_present"] & ~group["pred_present"]).sum()),
            "false_positive_frames": int((~group["gt_present"] & group["pred_present"]).sum()),
            "identity_switches": switches, "swapped_frames": int(swapped.sum()),
        })
    cols = ["particle", "in_truth", "frames_gt", "frames_scored", "J", "F", "JF", "F_size", "JF_size",
            "centroid_error_px_median",
            "centroid_error_px_mean", "missed_frames", "false_positive_frames", "identity_switches",
            "swapped_frames"]
    return pd.DataFrame(rows, columns=cols)
