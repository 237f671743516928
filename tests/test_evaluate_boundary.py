"""F at a boundary tolerance tied to particle size, next to DAVIS' (issue 20).

DAVIS' tolerance is 12 px at 1024²: every boundary error of a 20-px particle is inside it, so F reads
100 for a mask that is visibly wrong. ``F_size`` uses 0.1 × the true mask's equivalent diameter (≥ 1 px).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sam4em_live.evaluate.masks import (
    boundary_f,
    boundary_f_at,
    boundary_tolerance_px,
    size_tolerance_px,
)
from sam4em_live.evaluate.metrics import evaluate_run


def _disc(shape: tuple[int, int], cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


@pytest.mark.parametrize("area, expected", [
    (math.pi * 10**2, 2.0),  # 20 px across: 2 px
    (math.pi * 25**2, 5.0),  # 50 px across: 5 px
    (math.pi * 3**2, 1.0),  # 6 px across: 0.6 px, floored at 1 px
    (0.0, 1.0),
])
def test_size_tolerance_is_a_tenth_of_the_equivalent_diameter_at_least_one_pixel(area: float, expected: float) -> None:
    assert size_tolerance_px(area) == pytest.approx(expected)


def test_one_call_at_several_tolerances_equals_separate_calls() -> None:
    gt = _disc((96, 96), 48, 48, 12)
    pred = _disc((96, 96), 50, 45, 10)
    tolerances = (1.0, 1.5, 2.0, 6.0)
    together = boundary_f_at(pred, gt, tolerances)
    assert together == tuple(boundary_f(pred, gt, tol) for tol in tolerances)
    assert together[0] < together[1] < together[2] < together[3]


def test_davis_f_saturates_on_a_small_particle_and_the_size_tied_f_does_not() -> None:
    shape = (1024, 1024)
    assert boundary_tolerance_px(shape) == 12
    gt = np.zeros((3, *shape), dtype=np.uint16)
    pred = np.zeros_like(gt)
    for t in range(3):
        gt[t][_disc(shape, 500, 300 + 5 * t, 10)] = 1  # 20 px across
        pred[t][_disc(shape, 500, 304 + 5 * t, 10)] = 1  # the same disc 4 px off
    s = evaluate_run(pred, gt).summary()
    assert s["F"] == 100.0  # DAVIS: 4 px is within 12 px
    assert s["F_size"] < 60.0  # 2-px tolerance: most boundary pixels are off
    assert s["J&F_size"] == pytest.approx((s["J"] + s["F_size"]) / 2)
    assert s["size_tolerance_px_median"] == pytest.approx(size_tolerance_px(np.count_nonzero(gt[0])))
    exact = evaluate_run(gt.copy(), gt).summary()
    assert exact["F_size"] == 100.0 and exact["J&F_size"] == 100.0


def test_the_report_carries_both_f_in_every_table() -> None:
    shape = (512, 512)  # DAVIS: 6 px; size-tied: 0.1 x 22.6 px = 2.26 px
    gt = np.zeros((2, *shape), dtype=np.uint16)
    gt[:, 40:60, 40:60] = 1
    pred = np.roll(gt, 3, axis=2)
    report = evaluate_run(pred, gt)
    payload = json.loads(report.to_json())
    assert {"F", "J&F", "F_size", "J&F_size", "size_tolerance_rule", "boundary_tolerance_px"} <= set(payload["summary"])
    for table in ("per_particle", "per_frame", "per_particle_frame"):
        row = payload[table][0]
        assert {"F", "JF", "F_size", "JF_size"} <= set(row), table
        assert row["F_size"] < row["F"] == 100.0, table  # a 3-px shift: inside 6 px, outside 2.26 px
    assert "F_size" in report.table()
