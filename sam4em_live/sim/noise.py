"""Shot noise: exact Poisson counts, fast where the expected dose is uniform.

``numpy``'s Poisson sampler costs ~60 ns per pixel, too slow for 1024² frames
at video rate. Most pixels of a frame share one expectation (the particle-free
background), and for a single λ exact sampling is a table look-up: Walker's
alias method over the Poisson pmf (support cut where the tail mass is below
double precision). Pixels near particles, where λ varies, use numpy's sampler.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import stats


@lru_cache(maxsize=32)
def poisson_alias_table(lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table (acceptance probability, alias) for Poisson(``lam``)."""
    k_max = int(math.ceil(lam + 12.0 * math.sqrt(lam) + 12.0))
    pmf = stats.poisson.pmf(np.arange(k_max + 1), lam)
    pmf /= pmf.sum()
    size = pmf.size
    scaled = pmf * size
    accept = np.ones(size)
    alias = np.arange(size)
    small = [i for i in range(size) if scaled[i] < 1.0]
    large = [i for i in range(size) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        accept[s] = scaled[s]
        alias[s] = g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    accept.setflags(write=False)
    alias.setflags(write=False)
    return accept, alias


def poisson_uniform(lam: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Exact Poisson(``lam``) counts of ``shape`` as float32, by the alias method."""
    accept, alias = poisson_alias_table(float(lam))
    scaled = rng.random(shape)
    scaled *= accept.size
    column = scaled.astype(np.intp)
    scaled -= column  # the fractional part is a second uniform variate
    out = np.where(scaled < accept[column], column, alias[column])
    return out.astype(np.float32)


def shot_noise(
    mean_electrons: np.ndarray,
    model: str,
    rng: np.random.Generator,
    uniform_level: float | None = None,
    varying_boxes: Sequence[tuple[slice, slice]] = (),
) -> np.ndarray:
    """Electron counts (float32) drawn around ``mean_electrons``.

    With ``uniform_level`` given, every pixel outside ``varying_boxes`` must have
    exactly that expectation; those pixels are then sampled from a table
    (exact, much faster). Pixels inside the boxes are redrawn from their own
    expectation (a pixel in two boxes is simply redrawn; still exact).
    ``model``: "poisson", "gaussian" (N(λ, λ), fast approximation) or "none".
    """
    if model == "poisson":
        if uniform_level is None:
            return rng.poisson(mean_electrons).astype(np.float32)
        counts = poisson_uniform(uniform_level, mean_electrons.shape, rng)
        for box in varying_boxes:
            counts[box] = rng.poisson(mean_electrons[box])
        return counts
    if model == "gaussian":
        noise = rng.standard_normal(mean_electrons.shape, dtype=np.float32)
        noise *= np.sqrt(np.maximum(mean_electrons, 0.0, dtype=np.float32))
        noise += mean_electrons
        return noise
    if model == "none":
        return np.asarray(mean_electrons, dtype=np.float32).copy()
    raise ValueError(f"unknown shot-noise model {model!r}")
