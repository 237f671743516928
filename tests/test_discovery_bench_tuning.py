"""The discovery benchmark tunes our smallest blob with our threshold, as it tunes trackpy's diameter with minmass."""

from __future__ import annotations

import numpy as np

from tools.bench.benchmarks.discovery import OURS_MIN_DIAMETERS, Scored, tune_ours


def _frame(detections: list[tuple[float, float, float, float]]) -> Scored:
    truth = np.array([[50.0, 50.0, 8.0]])
    return Scored(np.array(detections, dtype=float).reshape(-1, 4), truth, np.zeros((0, 3)))


def test_a_size_that_drops_only_small_false_positives_is_chosen() -> None:
    # the particle scores 4 with an 18 px blob; a small noise blob scores 6 elsewhere
    scored = [_frame([(50.0, 51.0, 4.0, 18.0), (120.0, 40.0, 6.0, 6.0)]) for _ in range(5)]
    f1, threshold, min_diameter = tune_ours(scored)
    assert f1 == 1.0
    assert min_diameter > 6.0 and min_diameter in OURS_MIN_DIAMETERS
    assert threshold <= 4.0


def test_without_small_false_positives_the_smallest_size_stays() -> None:
    scored = [_frame([(50.0, 51.0, 4.0, 18.0), (120.0, 40.0, 3.0, 20.0)]) for _ in range(5)]
    f1, threshold, min_diameter = tune_ours(scored)
    assert f1 == 1.0
    assert min_diameter == OURS_MIN_DIAMETERS[0]
    assert 3.0 < threshold <= 4.0
