"""Seeding's fast paths against the expressions they replace: the same values, tested over random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.segment.embedded.seed_region import bounding_box


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


@pytest.mark.parametrize("seed", range(20))
def test_bounding_box_is_find_objects(seed: int) -> None:
    region = _random_region(np.random.default_rng(seed))
    if region.any():
        assert bounding_box(region) == ndimage.find_objects(region.astype(np.int32))[0]
