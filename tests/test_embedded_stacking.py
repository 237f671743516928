"""`stacking.stack` / `stack_columns` are `np.stack` (axis 0 / 1): the same arrays, dtypes and values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sam4em_live.segment.embedded.stacking import stack, stack_columns


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=got.dtype.kind in "fc")


def test_stack_equals_np_stack() -> None:
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 2**16, (200, 200)).astype(np.uint16)
    cases: list[list[Any]] = [
        [rng.standard_normal((32, 32)).astype(np.float32) for _ in range(16)],
        [rng.standard_normal((3, 27, 27)).astype(np.float32)[:, :20, :20] for _ in range(5)],  # views
        [frame[i : i + 40, 2 * i : 2 * i + 40] for i in range(7)],  # windows of a frame
        [rng.standard_normal(6) for _ in range(3)],
        [rng.standard_normal(4).astype(np.float32), rng.standard_normal(4)],  # promoted as np.stack does
        [np.array([np.nan, 1.0], np.float32)],
        [np.arange(5)[::-1], np.arange(5)],
    ]
    for arrays in cases:
        _same(stack(arrays), np.stack(arrays))
        assert stack(arrays).flags.c_contiguous


def test_stack_columns_equals_np_stack_axis_1() -> None:
    rng = np.random.default_rng(8)
    columns = [rng.integers(0, 9, 11) for _ in range(5)]
    _same(stack_columns(columns), np.stack(columns, axis=1))
    surface = rng.standard_normal((11, 3, 9))
    index = np.arange(11)[:, None]
    _same(surface[index, 1, stack_columns(columns)], surface[index, 1, np.stack(columns, axis=1)])


def test_what_np_stack_refuses_it_refuses() -> None:
    with pytest.raises(ValueError, match="same shape"):
        stack([np.zeros((2, 3)), np.zeros((4, 3))])
    with pytest.raises(ValueError, match="same shape"):
        stack([np.zeros((2, 3)), np.zeros((1, 3)), np.zeros((3, 3))])  # sizes that add up: still refused
    with pytest.raises(ValueError, match="same shape"):
        stack([np.zeros((2, 3)), np.zeros((2, 4))])  # another length of a later axis
    with pytest.raises(ValueError, match="same shape"):
        stack([np.zeros((2, 3)), np.zeros((2, 3, 1))])  # another number of axes
    with pytest.raises(ValueError, match="same shape"):
        stack([np.zeros(2), np.array(1.0)])  # a 0-d array further on
    with pytest.raises(ValueError, match="at least one array"):
        stack([])
    scalars: list[Any] = [np.float32(1.0), np.float32(2.0)]
    _same(stack(scalars), np.stack(scalars))  # 0-d
