"""Exact generators of Brownian and fractional Brownian tracks for the statistics tests.

Kept inside the tests on purpose: validation must not depend on the product's simulator.
"""

from __future__ import annotations

import numpy as np


def fgn_covariance(n: int, hurst: float) -> np.ndarray:
    """Autocovariance gamma(k), k = 0..n, of unit-variance fractional Gaussian noise."""
    k = np.arange(n + 1, dtype=np.float64)
    h2 = 2 * hurst
    return 0.5 * (np.abs(k - 1) ** h2 - 2 * k**h2 + (k + 1) ** h2)


def fgn(n: int, hurst: float, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` exact samples (count, n) of unit-variance fGn by circulant embedding (Davies-Harte).

    The circulant's eigenvalues are non-negative for every H in (0, 1) with this
    embedding, so the samples have exactly the fGn covariance.
    """
    gamma = fgn_covariance(n, hurst)
    row = np.concatenate([gamma, gamma[-2:0:-1]])  # first row of the 2n circulant
    eig = np.fft.fft(row).real
    if eig.min() < -1e-9 * eig.max():
        raise ValueError("circulant embedding is not positive semi-definite")
    m = row.size
    noise = rng.normal(size=(count, m)) + 1j * rng.normal(size=(count, m))
    paths = np.fft.fft(np.sqrt(np.clip(eig, 0, None) / m) * noise, axis=1)
    return paths[:, :n].real


def fbm_tracks(n_steps: int, alpha: float, diffusion: float, rng: np.random.Generator,
               count: int) -> np.ndarray:
    """(count, n_steps + 1, 2) fBm positions with MSD = 4 D tau^alpha (px, frames), starting at 0."""
    steps = fgn(n_steps, alpha / 2, rng, 2 * count) * np.sqrt(2 * diffusion)
    steps = steps.reshape(count, 2, n_steps).transpose(0, 2, 1)
    start = np.zeros((count, 1, 2))
    return np.concatenate([start, np.cumsum(steps, axis=1)], axis=1)


def brownian_tracks(n_steps: int, diffusion: float, rng: np.random.Generator, count: int,
                    noise_px: float = 0.0) -> np.ndarray:
    """(count, n_steps + 1, 2) Brownian positions (MSD = 4 D tau) plus static localisation noise."""
    steps = rng.normal(0, np.sqrt(2 * diffusion), size=(count, n_steps, 2))
    pos = np.concatenate([np.zeros((count, 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    return pos + rng.normal(0, noise_px, size=pos.shape) if noise_px else pos
