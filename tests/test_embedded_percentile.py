"""`window.float32_percentile` against `np.percentile`, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.segment.embedded.window import float32_percentile


@pytest.mark.parametrize("q", [90, 90.0, 50, 1.0, 99.0, 0, 100, 37.5])
def test_float32_percentile_equals_np_percentile_bit_for_bit(q: float) -> None:
    rng = np.random.default_rng(11)
    for size in [*range(1, 40), 99, 100, 101, 1000, 2209, 3025]:
        for scale in (1e-3, 1.0, 300.0):
            values = (scale * rng.standard_normal(size)).astype(np.float32)
            if size > 5:
                values[:3] = values[3]  # ties
            expected = float(np.percentile(values, q))
            assert float32_percentile(values, q) == expected or (np.isnan(expected) and size == 0), (size, q)
            assert values.dtype == np.float32


def test_float32_percentile_with_nan_is_nan() -> None:
    values = np.array([1.0, np.nan, 3.0, 2.0], np.float32)
    assert np.isnan(float32_percentile(values, 90)) and np.isnan(np.percentile(values, 90))


def test_float32_percentile_leaves_its_input_alone() -> None:
    values = np.arange(10, 0, -1, dtype=np.float32)
    float32_percentile(values, 90)
    assert np.array_equal(values, np.arange(10, 0, -1, dtype=np.float32))
