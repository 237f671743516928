"""`StaticMap.near_feature` (a summed-area table of the feature blocks) against its slice reference."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.segment.embedded.raster import PixelBox, Placement
from sam4em_live.segment.embedded.static_map import StaticMap, touches_feature


@pytest.mark.parametrize("density", [0.0, 0.01, 0.2])
def test_near_feature_equals_the_slice_of_the_feature_map(density: float) -> None:
    rng = np.random.default_rng(7)
    static = StaticMap()
    static.factor = 8
    for _ in range(3):  # the table follows a new feature map
        static.features = rng.random((40, 50)) < density
        for _ in range(400):
            x0, y0 = int(rng.integers(-20, 420)), int(rng.integers(-20, 340))
            box = PixelBox(x0, y0, x0 + int(rng.integers(1, 60)), y0 + int(rng.integers(1, 60)))
            placed = Placement(box, np.ones((box.y1 - box.y0, box.x1 - box.x0), bool), 1)
            assert static.near_feature(placed) == touches_feature(static.features, 8, placed), box


def test_near_feature_without_a_map_is_false() -> None:
    placed = Placement(PixelBox(0, 0, 5, 5), np.ones((5, 5), bool), 25)
    assert not StaticMap().near_feature(placed)
