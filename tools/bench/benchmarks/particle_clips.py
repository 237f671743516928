"""The particle-scaling benchmark's synthetic clips: N dark discs on a grid, each on its own slow random walk.

Kept apart from `particle_scaling` (which registers the benchmark) so the probes of `particle_probes` and
the tests can use the same frames without registering it twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["_prompts", "particle_centres", "particle_clip"]


def particle_centres(size: int, particles: int) -> np.ndarray:
    """(N, 2) row, column centres of ``particles`` on a square grid filling a ``size``² frame evenly."""
    side = int(np.ceil(np.sqrt(particles)))
    step = size / (side + 1)
    return np.asarray([((1 + i // side) * step, (1 + i % side) * step) for i in range(particles)])


def particle_clip(size: int, particles: int, frames: int, *, radius_px: float = 14.0, contrast: float = 14.0,
                  background: float = 133.0, noise: float = 12.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames, size, size) uint16 detector frames and (frames, N, 2) true row, column centres.

    Dark discs on a noisy bright background, as in the simulator's SAM4EM-like presets (the ``multi-1024``
    spheres are ~7 counts below a 133-count background with ~14 counts of noise; these are twice that
    contrast so that seeding never fails and the figure is the tracking cost). A random walk of ~0.7 px
    per frame per particle; the grid spacing keeps neighbours apart for the whole clip.
    """
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.7, (frames, particles, 2))
    steps[0] = 0.0
    centres = particle_centres(size, particles)[None] + np.cumsum(steps, axis=0)
    reach = int(np.ceil(radius_px)) + 1
    dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    stack = np.empty((frames, size, size), np.uint16)
    for t in range(frames):
        image = rng.standard_normal((size, size), dtype=np.float32)
        image *= noise
        image += background
        for y, x in centres[t]:
            y0, x0 = int(round(y)), int(round(x))
            disc = (dy + y0 - y) ** 2 + (dx + x0 - x) ** 2 <= radius_px**2
            image[y0 - reach:y0 + reach + 1, x0 - reach:x0 + reach + 1] -= contrast * disc
        np.clip(image, 0, 65535, out=image)
        stack[t] = image.astype(np.uint16)
    return stack, centres


def _prompts(centres: np.ndarray) -> list[Any]:
    from sam4em_live.particles import Prompt

    return [Prompt(i + 1, 0, ((float(x), float(y)),), (1,)) for i, (y, x) in enumerate(centres)]
