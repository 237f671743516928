"""`illumination.fit_illumination` stops its rejection rounds once settled: the fit of all the rounds, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.segment.embedded.illumination import fit_illumination, fit_texture


def _grid(seed: int, noise: float, particles: int, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Block means: a ramp times a vignette times quadrant gains, noise, dark particles, a few holes."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]] + 0.5
    u, v = 2 * cols / shape[1] - 1, 2 * rows / shape[0] - 1
    field = 1000 * (1 + 0.1 * u - 0.05 * v) * (1 - 0.08 * (u * u + v * v))
    field *= np.where(rows >= shape[0] / 2, 1.02, 1.0) * np.where(cols >= shape[1] / 2, 0.99, 1.0)
    field *= 1 + noise * rng.standard_normal(shape)
    for _ in range(particles):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        field[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] *= 0.8
    field[rng.random(shape) < 0.01] = np.nan
    return field


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("noise, particles", [(0.0, 0), (0.005, 4), (0.02, 12), (0.1, 30)])
def test_settled_rounds_give_the_fit_of_all_rounds(seed: int, noise: float, particles: int) -> None:
    blocks = _grid(seed, noise, particles)
    settled = fit_illumination(blocks, 16.0, 16.0)
    every = fit_illumination(blocks, 16.0, 16.0, stop_when_settled=False)
    assert settled is not None and every is not None
    assert np.array_equal(settled.coefficients, every.coefficients)
    assert settled.gains == every.gains and settled.structure == every.structure


def test_a_settled_fit_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    lstsq = np.linalg.lstsq
    monkeypatch.setattr(np.linalg, "lstsq", lambda *a, **k: calls.append(1) or lstsq(*a, **k))
    fit_illumination(_grid(0, 0.005, 4), 16.0, 16.0, stop_when_settled=False)
    every = len(calls)
    calls.clear()
    fit_illumination(_grid(0, 0.005, 4), 16.0, 16.0)
    assert len(calls) < every


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("particles", [0, 5, 40])
def test_settled_texture_rounds_give_the_texture_of_all_rounds(seed: int, particles: int) -> None:
    rng = np.random.default_rng(seed)
    ratio = 1 + 0.01 * rng.standard_normal((64, 64))
    for _ in range(particles):
        r, c = rng.integers(0, 64, 2)
        ratio[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3] *= 0.9
    held = np.zeros(ratio.shape, bool)
    held[10:14, 20:25] = True
    assert np.array_equal(fit_texture(ratio, held), fit_texture(ratio, held, stop_when_settled=False))
