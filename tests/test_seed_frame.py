"""The frame-level preparation a batch of prompts shares (`seed_frame`), against the per-window path it replaces.

A window's smoothed contrast cropped from the frame's must be what smoothing the flattened window gives
(away from the window's border, where the window repeated its edge pixels and the crop read the real
ones), at the fine scales (direct convolution) and the coarse ones (FFT), in a frame's corner, with
saturated pixels, for a window read as bright particles; the sorted-sample background
(`seed_region.robust_background`) must give the floats of the np.percentile / np.histogram / np.median
version it replaced; and a batch seeded together must give the seeds of its prompts seeded one by one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.particles import Prompt
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.seed import prepared_frame, seed_particle, seed_prompts
from sam4em_live.segment.embedded.seed_frame import SeedFrame, WindowSmoothing, shared_extent
from sam4em_live.segment.embedded.seed_region import (
    Background,
    background_surface,
    robust_background,
    smoothed,
    white_noise_after,
    without_surface,
)
from sam4em_live.segment.embedded.window import frame_window
from tests.test_embedded_seeding import dense_field, prompts_for

OPTIONS = EmbeddedOptions()


def vignetted_frame(seed: int, shape: tuple[int, int] = (520, 560), saturate: bool = False) -> np.ndarray:
    """Dark discs on a background with a gradient and a vignette, Poisson-like noise: uint16."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    half = max(shape) / 2
    background = 1000.0 * (1.0 + 0.3 * cols / shape[1]) * (1.0 - 0.2 * ((rows - half) ** 2 + (cols - half) ** 2) / half**2)
    cover = np.zeros(shape)
    for _ in range(30):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        cover += (rows - y) ** 2 + (cols - x) ** 2 <= rng.uniform(5, 15) ** 2
    image = background * (1.0 - 0.2 * ndimage.gaussian_filter(np.minimum(cover, 1.0), 1.0))
    image += rng.normal(0.0, 40.0, shape)
    if saturate:
        image[rng.random(shape) < 0.002] = 65535.0  # saturated: not read
    return np.clip(image, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("x0, y0, scale", [(60, 50, 1.0), (60, 50, 4.0), (60, 50, 13.6), (60, 50, 40.0),
                                           (-30, -25, 2.0), (-30, -25, 20.0), (300, 250, 9.0)])
@pytest.mark.parametrize("saturate", [False, True])
def test_a_window_cropped_from_the_frame_is_the_window_smoothed(x0: int, y0: int, scale: float,
                                                                saturate: bool) -> None:
    pixels = vignetted_frame(3, saturate=saturate)
    edge = 385
    frame = SeedFrame(pixels, (-120, -120, pixels.shape[1] + 120, pixels.shape[0] + 120), 40.0)
    raw = frame_window(pixels, x0, y0, edge, edge, polarity=1.0)
    surface = background_surface(raw, raw.valid)
    assert surface is not None
    flat = without_surface(raw, surface)
    cropped = frame.smoothed(raw, surface, scale)
    assert cropped is not None
    own = smoothed(flat, scale)
    # The crop differs from the window's own smoothing by a constant (what a Gaussian adds to the quadratic
    # surface, and the background level subtracts) away from the window's border and the frame's.
    away = math.ceil(4 * scale) + 1
    inner = np.zeros(raw.valid.shape, dtype=bool)
    inner[away:-away, away:-away] = True
    rows, cols = np.ogrid[y0 : y0 + edge, x0 : x0 + edge]
    inner &= (rows >= away) & (rows < pixels.shape[0] - away) & (cols >= away) & (cols < pixels.shape[1] - away)
    assert inner.sum() > 1000
    difference = (cropped - own)[inner]
    spread = float(np.abs(difference - np.median(difference)).max())
    # Far below the noise smoothing leaves (the pixel noise is 0.04 of the background): the same signal.
    assert spread < 0.1 * white_noise_after(0.04, scale), spread
    assert abs(float(np.median(difference))) < 0.01
    # Beyond the smoothing's reach of the frame both read 0.
    outside = ndimage.gaussian_filter(raw.valid.astype(np.float32), scale, mode="constant") <= 0.01
    assert np.all(cropped[outside] == 0.0)


def test_window_smoothing_falls_back_to_the_window_outside_the_region_and_negates() -> None:
    pixels = vignetted_frame(4)
    raw = frame_window(pixels, 150, 120, 97, 97, polarity=1.0)
    surface = background_surface(raw, raw.valid)
    flat = raw if surface is None else without_surface(raw, surface)
    small = SeedFrame(pixels, (0, 0, 100, 100), 40.0)  # does not hold the window
    assert small.smoothed(raw, surface, 4.0) is None
    smooth = WindowSmoothing(small, raw, surface, flat)
    assert np.array_equal(smooth(4.0), smoothed(flat, 4.0))
    assert np.array_equal(smooth.negated()(4.0), -smoothed(flat, 4.0))
    assert np.array_equal(WindowSmoothing(None, raw, surface, flat)(6.0), smoothed(flat, 6.0))


def test_a_batch_shares_a_region_only_where_its_windows_overlap() -> None:
    shape = (512, 512)
    dense = [(float(x), float(y), 240) for x in range(40, 500, 60) for y in range(40, 500, 120)]
    extent = shared_extent(dense, shape, 40.0, 96)
    assert extent == (-80, -80, 592, 592)  # the frame and the smoothing's reach beyond it
    assert shared_extent(dense[:1], shape, 40.0, 96) is None  # one prompt: its own windows cost less
    apart = [(100.0, 100.0, 240), (3900.0, 3900.0, 240)]
    assert shared_extent(apart, (4096, 4096), 40.0, 96) is None
    assert shared_extent([], shape, 40.0, 96) is None


def _old_robust_background(smooth: np.ndarray, usable: np.ndarray, white_noise: float = 0.0) -> Background:
    """`robust_background` as it was (np.percentile, np.histogram, np.median), the reference of the sorted one."""
    step = max(1, int(math.sqrt(smooth.size / 3000)))
    values = smooth[::step, ::step][usable[::step, ::step]]
    if values.size < 16:
        values = smooth.ravel()
    low, high = np.percentile(values, (1.0, 99.0))
    if not high > low:
        return Background(float(low), max(white_noise, 1e-6))
    bins = int(np.clip((high - low) / (0.5 * white_noise), 16, 256)) if white_noise > 0 else 64
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    counts = ndimage.uniform_filter1d(counts.astype(float), 3 if bins <= 64 else 5)
    level = float(0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1]))
    noise = white_noise if white_noise > 0 else 1.4826 * float(np.median(np.abs(values - level)))
    for _ in range(4):
        kept = values[np.abs(values - level) < 2.5 * max(noise, 1e-9)]
        if kept.size < 16:
            break
        level = float(np.median(kept))
        noise = max(white_noise, 1.4826 * 1.015 * float(np.median(np.abs(kept - level))))
    return Background(level, max(noise, 1e-6))


def test_the_sorted_background_is_the_histogram_one() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(20, 300))
        smooth = (rng.normal(size=(n, n)) * rng.uniform(0.001, 0.05)).astype(np.float32)
        smooth[int(rng.integers(0, n)) :, : int(rng.integers(0, n))] += np.float32(rng.uniform(-0.1, 0.1))
        usable = rng.random((n, n)) > rng.uniform(0.0, 0.5)
        white = float(rng.choice([0.0, rng.uniform(0.001, 0.02)]))
        assert robust_background(smooth, usable, white) == _old_robust_background(smooth, usable, white)


def test_a_dense_batch_seeds_what_its_prompts_seed_one_by_one() -> None:
    pixels, labels = dense_field(seed=6)
    prompts = [prompts_for(labels == p, p)[kind] for p in range(1, 13) for kind in ("centre", "near the rim")]
    prompts = [Prompt(p.particle * 10 + k % 2, 0, p.points, p.labels, p.box) for k, p in enumerate(prompts)]
    frame = prepared_frame(pixels, prompts, OPTIONS)
    assert frame.extent is not None  # the prompts share the frame's smoothing
    together = seed_prompts(pixels, prompts, OPTIONS)
    for prompt in prompts:
        alone = seed_particle(pixels, prompt, OPTIONS)  # no region: every window smoothed on its own
        batch = together[id(prompt)]
        a = np.zeros(pixels.shape, dtype=bool)
        b = np.zeros(pixels.shape, dtype=bool)
        for seed, out in ((alone, a), (batch, b)):
            rows, cols = np.nonzero(seed.mask)
            out[rows + seed.window.y0, cols + seed.window.x0] = True
        assert (a & b).sum() / (a | b).sum() >= 0.95, prompt.particle
        assert math.hypot(alone.x - batch.x, alone.y - batch.y) < 1.0

