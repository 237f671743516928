"""A seed that took in a neighbour is cut down to the particle the prompt is on (`prompt_split`).

Synthetic contrast windows with known truth: two discs 6 px apart (the dense field's gaps), blurred and
noisy, seeded as one region (as the dense field's 2 merged seeds were); a single rod, which must stay whole.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.particles import Prompt
from sam4em_live.segment.embedded.prompt_split import bodies, split_seed
from sam4em_live.segment.embedded.seed_window import seed_from_mask
from sam4em_live.segment.embedded.window import Window

SIZE = 120
LEFT, RIGHT = (43.0, 60.0), (77.0, 60.0)  # two discs of radius 14: a 6 px gap
RADIUS = 14.0
SMOOTHING_PX = 2.5


def _disc(cx: float, cy: float, radius: float) -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return (cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2


def _window(truth: np.ndarray, seed: int) -> Window:
    """Relative contrast 1 inside ``truth``, blurred by 1 px, with per-pixel noise 0.4 (CNR 2.5)."""
    rng = np.random.default_rng(seed)
    darkness = ndimage.gaussian_filter(truth.astype(np.float32), 1.0) + rng.normal(0, 0.4, truth.shape)
    return Window(0, 0, darkness.astype(np.float32), np.ones(truth.shape, dtype=bool), 1.0)


def _pair_seed(seed: int):
    """Both discs and the gap between them as one seed (what the merged dense seeds were)."""
    left, right = _disc(*LEFT, RADIUS), _disc(*RIGHT, RADIUS)
    bridge = np.zeros((SIZE, SIZE), dtype=bool)
    bridge[54:67, 56:64] = True  # the gap, seeded with the pair
    window = _window(left | right, seed)
    return seed_from_mask(window, left | right | bridge, 1.0, 1.0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("point, expected", [(LEFT, LEFT), (RIGHT, RIGHT), ((32.0, 60.0), LEFT),
                                                 ((88.0, 62.0), RIGHT)])
def test_a_point_keeps_the_particle_it_is_on(seed: int, point: tuple[float, float],
                                             expected: tuple[float, float]) -> None:
    merged = _pair_seed(seed)
    assert merged.radius_px > 2 * RADIUS  # the seed spans both
    kept = split_seed(merged, Prompt(1, 0, (point,), (1,)), SMOOTHING_PX)
    assert abs(kept.x - expected[0]) < 1.5 and abs(kept.y - expected[1]) < 1.5
    area = float(np.pi * RADIUS**2)
    assert 0.8 * area < kept.mask.sum() < 1.25 * area
    assert kept.radius_px < RADIUS + 5  # with its half of the gap


def test_a_box_keeps_the_part_it_holds_and_a_box_around_both_cuts_nothing() -> None:
    merged = _pair_seed(0)
    tight = split_seed(merged, Prompt(1, 0, box=(RIGHT[0] - RADIUS, RIGHT[1] - RADIUS, RIGHT[0] + RADIUS,
                                                 RIGHT[1] + RADIUS)), SMOOTHING_PX)
    assert abs(tight.x - RIGHT[0]) < 1.5
    both = Prompt(1, 0, box=(LEFT[0] - RADIUS, LEFT[1] - RADIUS, RIGHT[0] + RADIUS, RIGHT[1] + RADIUS))
    assert split_seed(merged, both, SMOOTHING_PX) is merged


@pytest.mark.parametrize("seed", range(8))
def test_a_single_particle_is_never_cut(seed: int) -> None:
    """A rod 44 x 18 px (and a disc) at the same noise: one body at every level, the seed returned as is."""
    rows, cols = np.indices((SIZE, SIZE))
    rod = ((cols - 60) / 22.0) ** 2 + ((rows - 60) / 9.0) ** 2 <= 1
    for truth in (rod, _disc(60, 60, 18)):
        single = seed_from_mask(_window(truth, seed), ndimage.binary_dilation(truth, iterations=2), 1.0, 1.0)
        assert bodies(single, SMOOTHING_PX) is None
        assert split_seed(single, Prompt(1, 0, ((50.0, 60.0),), (1,)), SMOOTHING_PX) is single


@pytest.mark.parametrize("seed", range(4))
def test_a_dip_inside_one_particle_is_not_a_gap(seed: int) -> None:
    """A rod whose middle is only 0.45 as dark (background texture across it, `foreign-noise`) stays whole."""
    rows, cols = np.indices((SIZE, SIZE))
    rod = ((cols - 60) / 26.0) ** 2 + ((rows - 60) / 9.0) ** 2 <= 1
    window = _window(rod, seed)
    window.darkness[:, 57:63] -= 0.55 * ndimage.gaussian_filter(rod.astype(np.float32), 1.0)[:, 57:63]
    single = seed_from_mask(window, ndimage.binary_dilation(rod, iterations=2), 1.0, 1.0)
    assert split_seed(single, Prompt(1, 0, ((45.0, 60.0),), (1,)), SMOOTHING_PX) is single


def test_without_the_split_the_pair_is_one_seed() -> None:
    """The check above can fail: the merged seed is what seeding handed over (centroid between the two)."""
    merged = _pair_seed(0)
    assert abs(merged.x - (LEFT[0] + RIGHT[0]) / 2) < 2
    parts = bodies(merged, SMOOTHING_PX)
    assert parts is not None and len(np.unique(parts[parts > 0])) == 2
