"""The seed's outline fits (`outline_fit`): the batched ellipse against the one it replaces, the pixels a fit reads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam4em_live.segment.embedded.ellipse import matched_ellipse
from sam4em_live.segment.embedded.outline_fit import (
    fit_pixels,
    fitted_ellipse,
    matched_polygon,
    polygon_inside,
)


def _scene(shape: str, seed: int, cnr: float) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 96² contrast image of one particle, and a rough start region (part of it, off-centre)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:96, 0:96].astype(float)
    if shape == "rod":
        t = math.radians(25.0)
        u, v = (cols - 47) * math.cos(t) + (rows - 49) * math.sin(t), (rows - 49) * math.cos(t) - (cols - 47) * math.sin(t)
        particle = (np.abs(u) <= 22) & (np.abs(v) <= 7)
    elif shape == "triangle":
        particle = polygon_inside([46.0, 50.0, 0.4, 11.0], 3, cols, rows) >= 0.5
    else:
        particle = (rows - 48) ** 2 + (cols - 46) ** 2 <= 15**2
    darkness = (0.1 * particle + rng.normal(0, 0.1 / cnr, particle.shape)).astype(np.float32)
    # Not round: a round start's every orientation scores the same, and float rounding breaks that tie.
    start = particle & (np.abs(rows - 50) <= 6) & (np.abs(cols - 45) <= 9)
    return darkness, start


@pytest.mark.parametrize("shape, seed, cnr", [("rod", 0, 1.0), ("triangle", 1, 0.7), ("disc", 2, 0.5),
                                                      ("disc", 3, 1.5), ("rod", 4, 0.4)])
def test_fitted_ellipse_is_matched_ellipse(shape: str, seed: int, cnr: float) -> None:
    """The batched fit scores the same candidates on the pixels that matter: the same ellipse."""
    darkness, start = _scene(shape, seed, cnr)
    support = np.ones_like(start)
    support[:, :20] = False  # a neighbour's territory: the fit must not read it
    assert np.array_equal(fitted_ellipse(darkness, start, support), matched_ellipse(darkness, start, support))


def test_fitted_ellipse_keeps_to_a_box_and_falls_back_like_matched_ellipse() -> None:
    darkness, start = _scene("disc", 5, 0.8)
    bounds = (46 - 17.0, 48 - 17.0, 46 + 17.0, 48 + 17.0)
    ellipse = fitted_ellipse(darkness, start, None, bounds)
    assert np.array_equal(ellipse, matched_ellipse(darkness, start, None, bounds))
    r, c = np.nonzero(ellipse)
    assert c.min() >= bounds[0] and c.max() <= bounds[2] and r.min() >= bounds[1] and r.max() <= bounds[3]
    tiny = (45.0, 47.0, 46.5, 48.5)  # smaller than any candidate: the start region comes back
    assert np.array_equal(fitted_ellipse(darkness, start, None, tiny), start)


def test_a_fit_reads_the_pixels_nearest_its_centre_first() -> None:
    rng = np.random.default_rng(7)
    xs, ys = rng.uniform(0, 60, 500).astype(np.float32), rng.uniform(0, 60, 500).astype(np.float32)
    values = rng.normal(size=500).astype(np.float32)
    pixels = fit_pixels(xs, ys, values, 30.0, 25.0)
    distance = np.hypot(pixels.xs - 30.0, pixels.ys - 25.0)
    assert np.all(np.diff(pixels.distance) >= 0)
    assert np.all(pixels.distance <= distance + 1e-4) and np.all(distance < pixels.distance + 0.25 + 1e-4)
    assert pixels.n_pixels == 500 and pixels.total == pytest.approx(float(values.sum()), abs=1e-3)


def test_matched_polygon_outlines_a_faint_triangle() -> None:
    darkness, start = _scene("triangle", 8, 0.8)
    rows, cols = np.mgrid[0:96, 0:96].astype(float)
    truth = polygon_inside([46.0, 50.0, 0.4, 11.0], 3, cols, rows) >= 0.5
    fitted = matched_polygon(darkness, start, 3)
    assert fitted is not None
    assert (fitted & truth).sum() / (fitted | truth).sum() > 0.85
