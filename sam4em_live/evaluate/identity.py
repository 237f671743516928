"""Identity integrity of tracks against presence-aware truth: hops, false presence, calibration.

Where `sam4em_live.evaluate.metrics` scores masks (J, F), this module scores *what a user's statistics
see*: where each particle was reported and whether it should have been reported at all.

Truth: one row per tracked particle per frame with ``frame, particle, x, y`` (NaN when out of the field),
``area`` (footprint pixels inside the frame), ``full_area``, ``radius_px`` and ``state``:
``visible`` (must be reported), ``absent`` (out of the field, faded, beam blanked: must not be reported)
or ``ambiguous`` (neither counts). Predictions: one row per particle per frame with ``frame, particle,
present, x, y, area, score`` (the backend's `ParticleMask` and its mask centroid). An optional ``run``
column in both pools several clips. Positions in pixels, x = column, y = row.

- **hop**: a reported position more than max(`HOP_MIN_PX`, the particle's radius) from its true position
  while the particle is in the field (visible, ambiguous, or faded but inside the frame); ``hops`` counts
  runs of consecutive hop frames (events), ``hop_frames`` the frames.
- **false presence**: reported present on an ``absent`` frame (``false_presence_fraction`` = of the absent
  particle-frames).
- **missed**: not reported on a ``visible`` frame.
- **area bias**: (reported area − true area) / true area on visible frames where the whole footprint is in
  the frame (median and mean, fractions).
- **calibration**: among frames reported with ``score ≥ score_threshold``, the fraction whose centroid is
  within `CALIBRATION_TOLERANCE_PX` of the truth (a report on an absent frame counts as wrong), and
  ``confident_wrong_frames``: confident reports that are hops or false presences (what a hook acting on
  the score would be misled by).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: A reported position farther than max(this, the particle's radius) from the truth is a hop.
HOP_MIN_PX = 10.0
#: Centroid error (px) within which a confident frame counts as right.
CALIBRATION_TOLERANCE_PX = 2.0
#: Fraction of the full footprint inside the frame for a frame to count in the area bias.
WHOLE_FOOTPRINT = 0.98
PREDICTION_COLUMNS = ("frame", "particle", "present", "x", "y", "area", "score")


@dataclass(frozen=True)
class IdentityFigures:
    """Track-level figures of one clip or of several pooled (see module docstring)."""

    particle_frames: int
    visible_frames: int
    absent_frames: int
    ambiguous_frames: int
    missed_frames: int
    false_presence_frames: int
    false_presence_fraction: float
    hops: int
    hop_frames: int
    centroid_error_px_median: float
    centroid_error_px_p95: float
    area_bias_median: float
    area_bias_mean: float
    confident_frames: int
    confident_correct_fraction: float
    confident_wrong_frames: int
    score_threshold: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_tracks(truth: pd.DataFrame, predictions: pd.DataFrame, score_threshold: float = 0.5) -> IdentityFigures:
    """Figures of ``predictions`` against ``truth`` (columns: module docstring)."""
    keys = ["run", "frame", "particle"] if "run" in truth.columns else ["frame", "particle"]
    pred = predictions.rename(columns={"x": "x_pred", "y": "y_pred", "area": "area_pred"})
    both = truth.merge(pred, on=keys, how="left")
    present = both["present"].fillna(False).to_numpy(dtype=bool)
    state = both["state"].to_numpy()
    visible, absent = state == "visible", state == "absent"
    error = np.hypot(both["x_pred"].to_numpy(dtype=float) - both["x"].to_numpy(dtype=float),
                     both["y_pred"].to_numpy(dtype=float) - both["y"].to_numpy(dtype=float))
    in_field = both["area"].to_numpy(dtype=float) > 0
    limit = np.maximum(HOP_MIN_PX, both["radius_px"].to_numpy(dtype=float))
    hop = present & in_field & (error > limit)
    both["hop"] = hop
    group_keys = [k for k in keys if k != "frame"]
    hops = 0
    for _, group in both.sort_values(keys).groupby(group_keys):
        flags = group["hop"].to_numpy(dtype=bool)
        hops += int(flags[0]) + int(np.count_nonzero(flags[1:] & ~flags[:-1])) if flags.size else 0
    scored = present & visible & np.isfinite(error)
    errors = error[scored]
    whole = scored & (both["area"].to_numpy(dtype=float) >= WHOLE_FOOTPRINT * both["full_area"].to_numpy(dtype=float))
    bias = (both["area_pred"].to_numpy(dtype=float)[whole] - both["area"].to_numpy(dtype=float)[whole]) \
        / both["area"].to_numpy(dtype=float)[whole]
    confident = present & (both["score"].fillna(0.0).to_numpy(dtype=float) >= score_threshold)
    correct = confident & ~absent & np.isfinite(error) & (error <= CALIBRATION_TOLERANCE_PX)
    wrong = confident & (hop | absent)
    n_absent = int(absent.sum())
    false_presence = int((present & absent).sum())
    return IdentityFigures(
        particle_frames=len(both), visible_frames=int(visible.sum()), absent_frames=n_absent,
        ambiguous_frames=int((state == "ambiguous").sum()), missed_frames=int((visible & ~present).sum()),
        false_presence_frames=false_presence,
        false_presence_fraction=false_presence / n_absent if n_absent else math.nan,
        hops=hops, hop_frames=int(hop.sum()),
        centroid_error_px_median=_percentile(errors, 50), centroid_error_px_p95=_percentile(errors, 95),
        area_bias_median=_percentile(bias, 50), area_bias_mean=float(bias.mean()) if bias.size else math.nan,
        confident_frames=int(confident.sum()),
        confident_correct_fraction=float(correct.sum() / confident.sum()) if confident.any() else math.nan,
        confident_wrong_frames=int(wrong.sum()),
        score_threshold=float(score_threshold),
    )


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan
