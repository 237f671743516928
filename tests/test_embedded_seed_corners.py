"""A click in a particle's corner, in a dense field: the particle under the click is seeded, or the click is
refused naming its particle -- never the neighbour 2 px beyond the corner ("lost beats wrong", issue 16).

The clicks are the robustness benchmark's `point-edge` prompts: 2 px inside the outline, at the farthest
point in a direction that differs between particles (for a triangle, mostly near a corner's tip).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from sam4em_live.particles import Prompt, PromptError
from tests.test_embedded_seeding import dense_field, gaps, iou, seeded_mask


def corner_click(truth: np.ndarray, particle: int) -> Prompt:
    """A click 2 px inside the outline, as far as it goes in the golden-angle direction of ``particle``."""
    inner = ndimage.binary_erosion(truth, iterations=2)
    ys, xs = np.nonzero(inner)
    cx, cy = xs.mean(), ys.mean()
    angle = math.radians(137.5 * particle)
    k = int(np.argmax((xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)))
    return Prompt(particle, 0, ((float(xs[k]), float(ys[k])),), (1,))


def test_a_corner_click_in_a_dense_field_seeds_its_own_particle_or_none() -> None:
    pixels, labels = dense_field(seed=5)
    spacing = gaps(labels)
    crowded = [int(p) for p in np.argsort(spacing)[:12] + 1]  # the particles with the closest neighbours
    seeded, refused_for = 0, []
    for particle in crowded:
        truth = labels == particle
        try:
            mask = seeded_mask(pixels, corner_click(truth, particle))
        except PromptError as exc:
            refused_for.append((particle, exc.particle))
            continue
        seeded += 1
        assert iou(mask, truth) > 0.7, (particle, iou(mask, truth))
        assert ((labels > 0) & ~truth & mask).sum() < 0.05 * mask.sum(), particle  # not a neighbour's
    assert seeded >= 10, (seeded, refused_for)
    assert all(mine == named for mine, named in refused_for)  # each refusal names its own particle
