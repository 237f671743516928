"""A seed that took in a touching look-alike with no valley between them is cut at the neck of its outline.

`prompt_split.necked_bodies`: two overlapping discs of uniform contrast (no valley for `prompt_split.bodies`)
fall apart at the neck of the seed's inscribed radius and the click keeps its own disc; a disc with the end of a
rod touching it (robustness `distractors`, MoNet seed 2: a sphere seeded with a look-alike rod) keeps the disc;
a lone disc, a lone rod, and a rod with a waist as deep as the pair's neck (both halves elongated) stay whole.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.particles import Prompt
from sam4em_live.segment.embedded.prompt_split import necked_bodies, split_seed
from sam4em_live.segment.embedded.seed_window import Seed, seed_from_mask
from sam4em_live.segment.embedded.window import Window

SIZE = 140
RADIUS = 18.0
LEFT, RIGHT = (52.0, 70.0), (86.0, 70.0)  # two discs of radius 18, 34 px apart: overlapping, a neck of 0.33 R
SMOOTHING_PX = 2.5


def _disc(cx: float, cy: float, radius: float) -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return (cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2


def _rod(cx: float, cy: float, half_length: float, half_width: float) -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    along = np.clip(np.abs(cols - cx) - half_length, 0, None)
    return along**2 + (rows - cy) ** 2 <= half_width**2


def _seed(truth: np.ndarray, seed: int) -> Seed:
    """Uniform contrast over ``truth`` (no valley anywhere: only the outline can tell), blurred and noisy."""
    rng = np.random.default_rng(seed)
    darkness = ndimage.gaussian_filter(truth.astype(np.float32), 1.0) + rng.normal(0, 0.4, truth.shape)
    window = Window(0, 0, darkness.astype(np.float32), np.ones(truth.shape, dtype=bool), 1.0)
    return seed_from_mask(window, truth, 1.0, 1.0)


@pytest.mark.parametrize("point, expected", [(LEFT, LEFT), (RIGHT, RIGHT), ((40.0, 72.0), LEFT)])
def test_two_touching_discs_are_cut_at_the_neck(point: tuple[float, float], expected: tuple[float, float]) -> None:
    merged = _seed(_disc(*LEFT, RADIUS) | _disc(*RIGHT, RADIUS), 0)
    kept = split_seed(merged, Prompt(1, 0, (point,), (1,)), SMOOTHING_PX)
    assert abs(kept.x - expected[0]) < 2.5 and abs(kept.y - expected[1]) < 1.0
    area = float(np.pi * RADIUS**2)
    assert 0.8 * area < kept.mask.sum() < 1.05 * area


def test_a_disc_beside_a_rod_keeps_the_disc() -> None:
    merged = _seed(_disc(40.0, 70.0, RADIUS) | _rod(86.0, 70.0, 18.0, 12.0), 1)
    kept = split_seed(merged, Prompt(1, 0, ((40.0, 70.0),), (1,)), SMOOTHING_PX)
    assert abs(kept.x - 40.0) < 3.0
    assert kept.mask.sum() < 1.15 * np.pi * RADIUS**2


@pytest.mark.parametrize("shape", ["disc", "rod", "waisted rod"])
def test_one_body_is_never_cut(shape: str) -> None:
    if shape == "disc":
        truth = _disc(70.0, 70.0, RADIUS)
    elif shape == "rod":
        truth = _rod(70.0, 70.0, 30.0, 12.0)
    else:  # two rod halves with a waist 0.7 of their half-width between them: elongated halves, no discs
        truth = _rod(50.0, 70.0, 10.0, 12.0) | _rod(90.0, 70.0, 10.0, 12.0) | _rod(70.0, 70.0, 12.0, 8.4)
    assert necked_bodies(_seed(truth, 2)) is None
