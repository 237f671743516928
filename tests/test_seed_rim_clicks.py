"""Rim clicks in dense fields (issue 16): the frame says which way particles are, a click in a rounded-off corner
still belongs to its particle, and a seed at the click merged with a neighbour loses to the particle's own.

Scenes are drawn with the helpers of tests/test_embedded_seeding.py (known truth, controlled CNR).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.particles import Prompt, PromptError
from sam4em_live.segment.embedded.seed import seed_particle
from sam4em_live.segment.embedded.seed_prompt import click_peaks, frame_polarity
from sam4em_live.segment.embedded.seed_region import noise_gain
from tests.test_embedded_seeding import BACKGROUND, OPTIONS, dense_field, place_plate, render


def _packed_cluster(seed: int, edge_px: float = 60.0, region_px: float = 200.0, shape: tuple[int, int] = (384, 384),
                    gap_px: float = 2.0, cnr: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Triangular plates packed with 2 px gaps in the middle of an otherwise empty frame: (pixels, labels).

    Around a plate of the cluster a prompt's window is mostly particle: its contrast is skewed towards
    the gaps, which look like the minority -- the "particles" of the other polarity.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    cover = np.zeros(shape)
    low, high = shape[0] / 2 - region_px / 2, shape[0] / 2 + region_px / 2
    placed = 0
    for _ in range(20000):
        cx, cy = rng.uniform(low, high), rng.uniform(low, high)
        placed += place_plate(labels, cover, rng, (cx, cy), edge_px, gap_px, placed + 1)
    return render(np.minimum(cover, 1.0), cnr, seed), labels


def _rim_clicks(labels: np.ndarray, particle: int) -> list[Prompt]:
    """Clicks 2 px inside the particle's outline, towards each of its three corners (as a user clicks a tip)."""
    inner = ndimage.binary_erosion(labels == particle, iterations=2)
    ys, xs = np.nonzero(inner)
    cx, cy = xs.mean(), ys.mean()
    far = int(np.argmax(np.hypot(xs - cx, ys - cy)))
    first = math.atan2(ys[far] - cy, xs[far] - cx)
    clicks = []
    for turn in (0.0, 2 * math.pi / 3, 4 * math.pi / 3):
        k = int(np.argmax((xs - cx) * math.cos(first + turn) + (ys - cy) * math.sin(first + turn)))
        clicks.append(Prompt(particle, 0, ((float(xs[k]), float(ys[k])),), (1,)))
    return clicks


def _on_frame(seed_mask: np.ndarray, x0: int, y0: int, shape: tuple[int, int]) -> np.ndarray:
    full = np.zeros(shape, dtype=bool)
    rows, cols = np.nonzero(seed_mask)
    rows, cols = rows + y0, cols + x0
    inside = (rows >= 0) & (cols >= 0) & (rows < shape[0]) & (cols < shape[1])
    full[rows[inside], cols[inside]] = True
    return full


def test_the_frame_says_which_way_particles_are() -> None:
    pixels, _ = dense_field(seed=3, count=45, edge_px=60.0, cnr=1.5)
    assert frame_polarity(pixels) == 1.0  # dark plates on a bright background
    bright = (2 * BACKGROUND - pixels.astype(np.float64)).astype(np.uint16)
    assert frame_polarity(bright) == -1.0
    noise = np.random.default_rng(0).normal(BACKGROUND, 20.0, (256, 256)).astype(np.uint16)
    assert frame_polarity(noise) == 0.0  # nothing to tell by: the window decides, as before


def test_a_rim_click_in_a_packed_cluster_climbs_to_plates_not_to_the_gaps() -> None:
    pixels, labels = _packed_cluster(seed=1)
    assert frame_polarity(pixels) == 1.0
    on_plates, on_gaps = 0, 0
    for particle in range(1, int(labels.max()) + 1):
        for prompt in _rim_clicks(labels, particle):
            for x, y in click_peaks(pixels, prompt, OPTIONS, frame_polarity(pixels)):
                if labels[int(round(y)), int(round(x))] > 0:
                    on_plates += 1
                else:
                    on_gaps += 1
    assert on_plates > 0
    assert on_gaps <= 0.05 * (on_plates + on_gaps), (on_plates, on_gaps)


@pytest.mark.slow  # 45 rim clicks, each followed to up to 3 peaks: ~1-4 min on the shared 2-core VM
def test_rim_clicks_in_a_packed_cluster_seed_their_own_plate_or_are_refused_naming_it() -> None:
    # At 36ee779 (before frame polarity and basins) 3 of these 45 clicks gave a seed on another plate.
    pixels, labels = _packed_cluster(seed=1)
    seeded, wrong, misnamed = 0, [], []
    clicks = [prompt for particle in range(1, int(labels.max()) + 1) for prompt in _rim_clicks(labels, particle)]
    for prompt in clicks:
        truth = labels == prompt.particle
        try:
            seed = seed_particle(pixels, prompt, OPTIONS)
        except PromptError as exc:  # "lost beats wrong", and the refusal names its particle
            if exc.particle != prompt.particle:
                misnamed.append((prompt.particle, exc.particle))
            continue
        mask = _on_frame(seed.mask, seed.window.x0, seed.window.y0, pixels.shape)
        seeded += 1
        if (mask & truth).sum() / (mask | truth).sum() < 0.5:
            wrong.append(prompt.particle)
    assert not misnamed
    assert seeded >= 0.9 * len(clicks), (seeded, len(clicks))
    assert len(wrong) <= 0.05 * len(clicks), wrong


def test_no_frame_pixel_near_a_point_is_infinitely_noisy_not_noiseless() -> None:
    valid = np.zeros((64, 64), dtype=bool)
    valid[:, :20] = True  # the frame ends 20 px into the window; the point lies 40 px beyond
    assert noise_gain(valid, 2.0, (32, 60)) == math.inf
    assert 1.0 < noise_gain(valid, 2.0, (32, 19)) < math.inf
