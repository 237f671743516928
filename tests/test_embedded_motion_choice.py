"""`search.motion_choice`: between two near-equal poses on different bodies, the particle's motion decides."""

from __future__ import annotations

import numpy as np

from sam4em_live.segment.embedded.search import RIVAL_FRACTION, MotionPrior, motion_choice

CELLS = 21
GRID = np.arange(CELLS, dtype=np.float32) * 4.0  # coarse cells 4 px apart, frame pixels 0..80
RADIUS = 10.0


def _objective(peaks: list[tuple[int, int, float]], angles: int = 3) -> np.ndarray:
    """An (angles, cells²) objective: Gaussian bumps (row, col, height) on a zero floor, best at angle 1."""
    rows, cols = np.mgrid[0:CELLS, 0:CELLS]
    surface = np.zeros((CELLS, CELLS), np.float32)
    for row, col, height in peaks:
        surface = np.maximum(surface, height * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 2.0))
    stack = np.stack([surface * 0.9, surface, surface * 0.8])[:angles]
    return stack.reshape(angles, -1).astype(np.float32)


def _prior(x: float, y: float) -> MotionPrior:
    return MotionPrior(x, y, 0.0, 48.0, 6.0, 30.0, 0.65, 1.0)


def _cell(objective: np.ndarray, row: int, col: int) -> int:
    return int(objective[:, row * CELLS + col].argmax()) * CELLS * CELLS + row * CELLS + col


def _best(objective: np.ndarray) -> int:
    return int(objective.argmax())


def test_a_near_equal_rival_nearer_the_prediction_is_taken() -> None:
    objective = _objective([(10, 5, 20.0), (10, 15, 19.0)])  # best at x=20, rival at x=60 (y=40)
    chosen = motion_choice(objective, GRID, GRID, RADIUS, _prior(58.0, 40.0), _best(objective))
    assert chosen == _cell(objective, 10, 15)
    assert chosen // (CELLS * CELLS) == 1  # the rival's own best angle


def test_the_best_stays_when_it_is_nearer_the_prediction() -> None:
    objective = _objective([(10, 5, 20.0), (10, 15, 19.0)])
    best = _best(objective)
    assert motion_choice(objective, GRID, GRID, RADIUS, _prior(22.0, 40.0), best) == best


def test_a_clearly_weaker_rival_is_not_a_rival() -> None:
    weak = 20.0 * RIVAL_FRACTION * 0.9
    objective = _objective([(10, 5, 20.0), (10, 15, weak)])
    best = _best(objective)
    assert motion_choice(objective, GRID, GRID, RADIUS, _prior(60.0, 40.0), best) == best


def test_a_second_peak_on_the_same_body_is_not_a_rival() -> None:
    # 4 px apart, within RIVAL_MIN_RADII of a 10 px particle: the slope of one body, not another body.
    objective = _objective([(10, 10, 20.0), (10, 11, 19.9)])
    best = _best(objective)
    assert best == _cell(objective, 10, 10)
    assert motion_choice(objective, GRID, GRID, RADIUS, _prior(60.0, 40.0), best) == best
