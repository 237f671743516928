"""The seed's outline fits (`outline_fit`): the batched ellipse against the one it replaces, the pixels a fit reads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam4em_live.segment.embedded.ellipse import matched_ellipse
from sam4em_live.segment.embedded.fit_scoring import ellipse_radius, ellipse_z, fit_pixels, polygon_z
from sam4em_live.segment.embedded.outline_fit import (
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
    distance = np.hypot(pixels.xs, pixels.ys)  # the pixels less the centre
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


def _z_everywhere(inside: np.ndarray, values: np.ndarray) -> float:
    """The z of a soft template over every pixel, as the fits define it (no pixel left out)."""
    centred = inside - inside.mean()
    return float(centred @ values) / float(np.linalg.norm(centred))


@pytest.mark.parametrize("sides", [3, 4])
def test_polygon_z_scores_every_candidate_as_over_all_its_pixels(sides: int) -> None:
    """Runs of one orientation (shared projections), each its own orientation, and a mix: z as over every pixel."""
    rng = np.random.default_rng(9)
    gy, gx = np.mgrid[0:70, 0:70].astype(np.float32)
    xs, ys = gx.ravel(), gy.ravel()
    values = rng.normal(size=xs.size).astype(np.float32)
    pixels = fit_pixels(xs, ys, values, 34.5, 36.0)
    size = [9.0] if sides == 3 else [14.0, 6.0]
    scan = [[34.5, 36.0, a, *(s * f for s in size)] for a in (0.1, 0.5) for f in (0.9, 1.0, 1.2)]
    shifts = [[34.5 + dx, 36.0 + dy, 0.3, *size] for dx in (-1.5, 0.5) for dy in (-0.5, 1.5)]
    turns = [[35.0, 35.0, 0.3 + t, *size] for t in (-0.1, 0.0, 0.1)]
    for cands in (scan, shifts, turns, scan + turns):
        got = polygon_z(np.array(cands), sides, pixels, None)
        want = [_z_everywhere(polygon_inside(list(c), sides, xs, ys), values) for c in cands]
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    bounds = (17.0, 17.0, 52.5, 52.5)  # the smaller candidates fit, the largest do not
    got = polygon_z(np.array(scan), sides, pixels, bounds)
    assert np.isneginf(got).any() and np.isfinite(got).any()


def test_ellipse_z_scores_every_candidate_as_over_all_its_pixels() -> None:
    rng = np.random.default_rng(10)
    gy, gx = np.mgrid[0:70, 0:70].astype(np.float32)
    xs, ys = gx.ravel(), gy.ravel()
    values = rng.normal(size=xs.size).astype(np.float32)
    pixels = fit_pixels(xs, ys, values, 34.5, 36.0)
    sizes = [[34.5, 36.0, 0.4, a, b] for a in (8.0, 11.0) for b in (4.0, 6.0)]  # one centre and orientation
    moved = [[34.5 + dx, 36.0, 0.4 + t, 10.0, 5.0] for dx, t in ((-2.0, 0.0), (1.0, 0.3))]
    for cands in (sizes, moved):
        got = ellipse_z(np.array(cands), pixels, None)
        radius = ellipse_radius(np.array(cands), xs, ys)
        want = [_z_everywhere(np.clip((1.0 - r) * c[4] + 0.5, 0.0, 1.0), values) for r, c in zip(radius, cands, strict=True)]
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
