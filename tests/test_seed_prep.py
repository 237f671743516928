"""Seeding's shared preparation and fast paths: the same pixels as the calls they replace."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.segment.embedded.seed_frame import SeedFrame, point_window
from sam4em_live.segment.embedded.seed_region import background_surface, dilated, eroded, without_surface
from sam4em_live.segment.embedded.window import frame_window, robust_noise


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (2, 2), (3, 5), (41, 37)])
@pytest.mark.parametrize("fill", [0.3, 0.7, 0.97])
def test_eroded_is_binary_erosion(shape: tuple[int, int], fill: float) -> None:
    mask = np.random.default_rng(int(100 * fill) + shape[0]).random(shape) < fill
    assert np.array_equal(eroded(mask), ndimage.binary_erosion(mask))


def test_a_clicks_window_prepared_for_its_peaks_serves_its_seed_once() -> None:
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:160, 0:160]
    pixels = (1000.0 * (1 + 0.0005 * cols) - 80.0 * ((rows - 70) ** 2 + (cols - 90) ** 2 < 15**2)
              + rng.normal(0, 30, rows.shape)).astype(np.float32)
    frame = SeedFrame(pixels)
    kept = point_window(pixels, 40, 25, 97, frame, keep=True)
    raw = frame_window(pixels, 40, 25, 97, 97, polarity=1.0)
    surface = background_surface(raw, raw.valid)
    assert surface is not None
    flat = without_surface(raw, surface)
    assert np.array_equal(kept.raw.darkness, raw.darkness) and np.array_equal(kept.surface, surface)
    assert np.array_equal(kept.flat.darkness, flat.darkness)
    assert kept.pixel_noise == robust_noise(flat.darkness, flat.valid.astype(np.float32))
    assert point_window(pixels, 40, 25, 97, frame) is kept  # the seed takes it ...
    again = point_window(pixels, 40, 25, 97, frame)  # ... and the next one prepares its own
    assert again is not kept and np.array_equal(again.flat.darkness, kept.flat.darkness)
    assert point_window(pixels, 40, 25, 97, None, keep=True) is not point_window(pixels, 40, 25, 97, None)


@pytest.mark.parametrize("fill", [0.0, 0.002, 0.05, 0.5])
@pytest.mark.parametrize("iterations", [1, 3, 9])
def test_dilated_is_binary_dilation(fill: float, iterations: int) -> None:
    mask = np.random.default_rng(iterations).random((61, 57)) < fill
    mask[0, 30] = fill > 0  # a pixel on the border: the box meets the array's edge
    assert np.array_equal(dilated(mask, iterations), ndimage.binary_dilation(mask, iterations=iterations))
