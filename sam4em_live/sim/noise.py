"""Shot noise: exact Poisson counts, fast where the expected dose is uniform.

``numpy``'s Poisson sampler costs ~60 ns per pixel, too slow for 1024² frames
at video rate. Most pixels of a frame share one expectation (the particle-free
background), and for a single λ exact sampling is a table look-up: inversion
of the Poisson CDF (support cut where the tail mass is below double precision)
through a guide table indexed by the top bits of a random word. Pixels near
particles, where λ varies, use numpy's sampler.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Bits of each 64-bit random word used to pick a bucket of the inverse-CDF guide table.
GUIDE_BITS = 16


@lru_cache(maxsize=32)
def poisson_guide_table(lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF guide table for Poisson(``lam``): (outcome per bucket or -1, CDF).

    Bucket ``b`` holds the uniforms u in [b, b+1) / 2**GUIDE_BITS. Where the CDF
    has no step inside a bucket its outcome is fixed; the few buckets containing
    a step (about one per support value) are resolved with the full-precision u.
    """
    k_max = math.ceil(lam + 12.0 * math.sqrt(lam) + 12.0)
    cdf = np.cumsum(stats.poisson.pmf(np.arange(k_max + 1), lam))
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    edges = np.arange(2**GUIDE_BITS + 1, dtype=np.float64) / 2**GUIDE_BITS
    # k(u) = #{cdf <= u}; constant on a bucket iff its value at the low edge equals its limit at the high edge.
    low = np.searchsorted(cdf, edges[:-1], side="right")
    high = np.searchsorted(cdf, edges[1:], side="left")
    guide = np.where(low == high, low, -1).astype(np.int32)
    guide.setflags(write=False)
    cdf.setflags(write=False)
    return guide, cdf


def poisson_uniform(lam: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Exact Poisson(``lam``) counts of ``shape`` as float32 (inverse CDF with a guide table).

    Each pixel uses one 64-bit random word: its top bits pick the bucket and, in
    the rare ambiguous buckets, its top 53 bits are the uniform compared with the CDF.
    """
    guide, cdf = poisson_guide_table(float(lam))
    out = np.empty(math.prod(shape), dtype=np.float32)
    for start in range(0, out.size, _CHUNK):  # chunks keep the random words in cache
        words = rng.bit_generator.random_raw(min(_CHUNK, out.size - start))
        counts = guide[words >> np.uint64(64 - GUIDE_BITS)]
        ambiguous = np.flatnonzero(counts < 0)
        if ambiguous.size:
            uniforms = (words[ambiguous] >> np.uint64(11)).astype(np.float64) * 2.0**-53
            counts[ambiguous] = np.searchsorted(cdf, uniforms, side="right")
        out[start : start + words.size] = counts
    return out.reshape(shape)


_CHUNK = 1 << 18


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
