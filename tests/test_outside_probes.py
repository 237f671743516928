"""The after-segmentation probe (`tools.bench.benchmarks.outside_probes`) runs both sides and compares them."""

from __future__ import annotations

import numpy as np
import pytest

import sam4em_live.measure as measure_module
from tools.bench.benchmarks import outside_probes


def test_disc_masks_are_the_discs_at_the_centres() -> None:
    centres = np.array([[40.3, 50.7], [100.0, 20.5]])
    masks = outside_probes.disc_masks(centres, radius_px=6.0)
    measured = measure_module.measure_masks(masks, 0)
    assert [m.particle for m in measured] == [1, 2]
    for m, (y, x) in zip(measured, centres, strict=True):
        assert abs(m.x - x) < 0.2 and abs(m.y - y) < 0.2 and abs(m.area_px - np.pi * 36) < 12


def test_a_tiny_comparison_reports_every_stage_and_equal_outputs() -> None:
    report = outside_probes.compare(30, frames=24, warmup=8)
    assert "outputs equal" in report
    for stage in (*outside_probes.STAGES, "total"):
        assert f"  {stage} " in report


def test_a_fast_side_that_differs_fails_the_probe(monkeypatch) -> None:
    real = measure_module.measure_masks

    def off_by_a_bit(masks, index, *args):  # what a wrong fast path would give
        return tuple(type(m)(**{**{f: getattr(m, f) for f in m.__dataclass_fields__}, "x": m.x + 1e-9})
                     for m in real(masks, index, *args))

    monkeypatch.setattr(measure_module, "measure_masks", off_by_a_bit)
    with pytest.raises(AssertionError, match="differ"):
        outside_probes.compare(30, frames=12, warmup=4)
