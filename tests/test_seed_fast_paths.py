"""Seeding's fast paths against the expressions they replace: the same values, tested over random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import convex_hull_image

from sam4em_live.segment.embedded.dense_territory import CONVEX_SOLIDITY, convex_enough
from sam4em_live.segment.embedded.seed_region import bounding_box, clipped


def _random_region(rng: np.random.Generator) -> np.ndarray:
    """Up to three ellipses and rectangles at random angles: convex blobs, rods, merged neighbours."""
    h, w = (int(n) for n in rng.integers(8, 90, 2))
    rows, cols = np.mgrid[0:h, 0:w]
    region = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        a, b = rng.uniform(2, 30, 2)
        angle = rng.uniform(0, np.pi)
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        u = (cols - x0) * np.cos(angle) + (rows - y0) * np.sin(angle)
        v = (rows - y0) * np.cos(angle) - (cols - x0) * np.sin(angle)
        region |= (u / a) ** 2 + (v / b) ** 2 < 1 if rng.random() < 0.5 else (np.abs(u) < a) & (np.abs(v) < b)
    return region


def test_clipped_keeps_the_values_of_the_expression() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(1, 300))
        ordered = np.sort((rng.normal(0, rng.uniform(0.001, 2), n) + rng.choice([0.0, 0.3])).astype(np.float32))
        if rng.random() < 0.3:  # ties, and values exactly at the bound
            ordered = np.sort(np.round(ordered, int(rng.integers(1, 3))).astype(np.float32))
        level = float(ordered[rng.integers(0, n)]) + float(rng.normal(0, 0.01)) * float(rng.random() < 0.5)
        bound = float(abs(rng.normal(0, 0.5))) + 1e-9
        if rng.random() < 0.3:
            bound = float(abs(ordered[rng.integers(0, n)] - np.float32(level)))
        expected = ordered[np.abs(ordered - level) < bound]
        assert np.array_equal(clipped(ordered, level, bound), expected)


def test_convex_enough_is_the_hull_test() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        region = _random_region(rng)
        if not region.any():
            continue
        rows, cols = np.nonzero(region)
        crop = region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        expected = rows.size >= CONVEX_SOLIDITY * float(convex_hull_image(crop).sum())
        assert convex_enough(crop, rows.size) == expected


@pytest.mark.parametrize("seed", range(20))
def test_bounding_box_is_find_objects(seed: int) -> None:
    region = _random_region(np.random.default_rng(seed))
    if region.any():
        assert bounding_box(region) == ndimage.find_objects(region.astype(np.int32))[0]
