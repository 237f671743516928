"""The first measured edge of a memory replaces its provisional contour (the seed's outline grown by the blur and
the smoothing) faster than later refreshes may move a mask (issue 16: the mask inherits neither)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.shape import ShapeMemory

HALF = 40


def _grid() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[-HALF : HALF + 1, -HALF : HALF + 1].astype(float)
    return cols, rows


def _dome(radius_px: float, blur_px: float, noise: float, seed: int) -> np.ndarray:
    x, y = _grid()
    dome = np.sqrt(np.clip(1 - (x**2 + y**2) / radius_px**2, 0, None))
    image = ndimage.gaussian_filter(dome, blur_px) * 0.05
    return (image + noise * np.random.default_rng(seed).standard_normal(image.shape)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_first_measured_edge_replaces_an_overgrown_provisional_mask(seed: int) -> None:
    """A 20 px sphere whose young mask is 2.25x too large converges within 3 refreshes of its measured edge;
    held to 1.25x a refresh, it was still 15 % too large."""
    radius = 10.0
    image = _dome(radius, 2.0, 0.002, seed)
    x, y = _grid()
    memory = ShapeMemory(image, x**2 + y**2 <= (1.5 * radius) ** 2, EmbeddedOptions())
    memory.n_obs = 20  # the memory is old enough for its edge to be measured
    for _ in range(3):
        memory.refresh()
    assert memory.edge is not None and memory.edge.model == "chord"
    assert abs(memory.area_px / (np.pi * radius**2) - 1) <= 0.08


@pytest.mark.parametrize("scale", [0.6, 1.0])
def test_growth_and_later_refreshes_keep_the_usual_limit(scale: float) -> None:
    """A mask seeded small grows 1.25x a refresh even at its first measured edge; once measured, a memory that
    suddenly describes a larger particle (bad frames) also moves 1.25x a refresh."""
    image = _dome(10.0, 2.0, 0.002, 0)
    x, y = _grid()
    memory = ShapeMemory(image, x**2 + y**2 <= (scale * 10.0) ** 2, EmbeddedOptions())
    memory.n_obs = 20
    area = memory.area_px
    memory.refresh()
    assert memory.measured and memory.area_px <= 1.25 * area + 1
    area = memory.area_px
    memory.appearance = _dome(16.0, 2.0, 0.002, 1)
    memory._halves[:] = memory.appearance
    memory.refresh()
    assert memory.area_px <= 1.25 * area + 1
