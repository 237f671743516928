"""Discovery's detector: evidence carried from run to run, and neighbours in one blob split."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from sam4em_live.discover.detector import DetectorSettings, ParticleDetector
from sam4em_live.discover.evidence import CarriedEvidence

GRID = 128


def _noise(rng: np.random.Generator) -> np.ndarray:
    """A matched-filter map of pure noise: correlated over ~2 cells, unit standard deviation."""
    field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (GRID, GRID)), 2.0)
    return (field / field.std()).astype(np.float32)


def _bump(x: float, y: float, height: float) -> np.ndarray:
    yy, xx = np.mgrid[:GRID, :GRID]
    return (height * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))).astype(np.float32)


def test_a_faint_particle_moving_within_reach_gathers_evidence_that_one_frame_lacks() -> None:
    """A 3-sigma particle moving 2 cells (4 px) a run: carried, its evidence rises well above one frame's."""
    rng = np.random.default_rng(1)
    carried, alone = CarriedEvidence(0.7, 6.0, 6.0), CarriedEvidence(0.0, 6.0, 6.0)
    now, with_evidence = [], []
    for run in range(10):
        x = 30.0 + 2.0 * run
        darkness = _noise(rng) + _bump(x, 64.0, 3.0)
        assert alone.update(darkness, 1, 2) is darkness  # no decay: each run stands alone
        evidence = carried.update(darkness, 1, 2)
        if run >= 4:
            now.append(float(darkness[64, int(x)]))
            with_evidence.append(float(evidence[64, int(x)]))
    assert np.mean(with_evidence) > np.mean(now) + 1.0
    assert np.mean(with_evidence) > 4.0 > np.mean(now)


def test_carried_evidence_stays_in_noise_sigmas_and_a_strong_particle_leaves_no_wake() -> None:
    rng = np.random.default_rng(2)
    carried = CarriedEvidence(0.7, 6.0, 6.0)
    for _ in range(6):
        evidence = carried.update(_noise(rng), 1, 2)
    sub = evidence[::2, ::2]
    assert abs(float(np.median(sub))) < 0.2
    assert 0.8 < 1.4826 * float(np.median(np.abs(sub - np.median(sub)))) < 1.25
    carried.update(_noise(rng) + _bump(64.0, 64.0, 40.0), 1, 2)  # a strong particle, gone at the next run
    after = carried.update(_noise(rng), 1, 2)
    assert float(after[58:71, 58:71].max()) < 6.0  # capped: what it carries is at most 0.7 x 6 sigmas


def _disk(x: float, y: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:256, :256]
    return (np.hypot(xx - x, yy - y) <= r).astype(np.float64)


def test_two_near_neighbours_in_one_blob_are_two_candidates() -> None:
    """16 and 18 px particles 8 px apart: one blob at the low threshold, two candidates, one on each."""
    hits = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        pixels = 1000.0 * (1 - 0.06 * _disk(120.0, 128.0, 8.0) - 0.06 * _disk(145.0, 128.0, 9.0))
        pixels += rng.normal(0.0, 30.0, pixels.shape)
        found = ParticleDetector(DetectorSettings(polarity="dark")).detect(pixels)
        on = [any(math.hypot(c.x - x, c.y - 128.0) < 5.0 for c in found) for x in (120.0, 145.0)]
        hits += all(on)
    assert hits >= 3
