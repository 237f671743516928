"""A seed much larger than the other seeds of its batch is trimmed to a body around its point (`prompt_split`).

Where two touching particles leave no valley, `split_seed` keeps both; a batch of like particles prompted
together knows the size of one (`batch_body_px`), and the oversized seed is cut to a disc of that size around
the prompt's point (`trimmed_to_body`). Synthetic seeds with known truth: discs of radius 14, one seed holding
its disc and a touching neighbour with no gap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam4em_live.particles import Prompt
from sam4em_live.segment.embedded.prompt_split import OVERSIZED, batch_body_px, trimmed_to_body
from sam4em_live.segment.embedded.seed_window import Seed, seed_from_mask
from sam4em_live.segment.embedded.window import Window

SIZE = 120
RADIUS = 14.0
OWN, NEIGHBOUR = (45.0, 60.0), (72.0, 60.0)  # 27 px apart: the discs overlap by 1 px, no valley


def _disc(cx: float, cy: float, radius: float = RADIUS) -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return (cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2


def _seed(mask: np.ndarray) -> Seed:
    window = Window(0, 0, mask.astype(np.float32), np.ones(mask.shape, dtype=bool), 1.0)
    return seed_from_mask(window, mask, 1.0, 1.0)


def _batch(areas_scale: list[float]) -> list[Seed]:
    return [_seed(_disc(60.0, 60.0, RADIUS * math.sqrt(scale))) for scale in areas_scale]


def test_a_batch_of_like_seeds_knows_a_body_and_a_small_or_mixed_one_does_not() -> None:
    body = float(_disc(60.0, 60.0).sum())
    like = batch_body_px(_batch([1.0, 0.95, 1.05, 0.9, 1.1, 2.0]))
    assert like is not None and abs(like - body) < 0.06 * body  # the merged seed does not move the median
    assert batch_body_px(_batch([1.0, 1.0, 1.0, 1.0])) is None  # too few to tell
    assert batch_body_px(_batch([0.3, 0.6, 1.0, 1.8, 3.0])) is None  # unlike particles: no one body


@pytest.mark.parametrize("click", [OWN, (40.0, 55.0), (52.0, 66.0)])
def test_an_oversized_seed_is_trimmed_to_the_body_under_its_point(click: tuple[float, float]) -> None:
    own = _disc(*OWN)
    merged = _seed(own | _disc(*NEIGHBOUR))
    body = float(own.sum())
    trimmed = trimmed_to_body(merged, Prompt(1, 0, (click,), (1,)), body)
    kept = trimmed.mask
    assert kept.sum() <= 1.05 * body
    assert (kept & own).sum() >= 0.8 * kept.sum()  # mostly its own disc
    assert math.hypot(trimmed.x - click[0], trimmed.y - click[1]) < 0.5 * RADIUS
    assert math.hypot(trimmed.x - NEIGHBOUR[0], trimmed.y - NEIGHBOUR[1]) > 1.5 * RADIUS


def test_a_seed_of_its_body_size_a_box_and_an_unknown_body_are_left_alone() -> None:
    own = _disc(*OWN)
    body = float(own.sum())
    single = _seed(own)
    assert trimmed_to_body(single, Prompt(1, 0, (OWN,), (1,)), body) is single
    slightly_large = _seed(_disc(*OWN, RADIUS * math.sqrt(0.95 * OVERSIZED)))
    assert trimmed_to_body(slightly_large, Prompt(1, 0, (OWN,), (1,)), body) is slightly_large
    merged = _seed(own | _disc(*NEIGHBOUR))
    box = Prompt(1, 0, box=(OWN[0] - RADIUS, OWN[1] - RADIUS, OWN[0] + RADIUS, OWN[1] + RADIUS))
    assert trimmed_to_body(merged, box, body) is merged
    assert trimmed_to_body(merged, Prompt(1, 0, (OWN,), (1,)), None) is merged
