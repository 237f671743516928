"""The edge fit on memories blurred beyond the detector: a soft MTF plus the alignment's jitter (issue 16).

A faint particle's memory is the average of frames aligned at poses that are off by several pixels, so
its edge is the detector's blur and that jitter together (4-6 px at CNR 0.3 with the soft MTF). The fit
must model such a blur, or the mask shrinks with it: the smoothing scale of the data would enter the mask.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.shape import ShapeMemory
from tests.test_embedded_mask_bias import blurred_contrast


def jittered_memory_area_bias(shape: str, size_px: float, jitter_px: float, seed: int) -> tuple[float, str]:
    """Area bias of a converged memory whose two halves are independent noisy images blurred by the jitter.

    Soft MTF (f0 halved), noise correlated through it at 0.3 of the mean contrast; the jitter is a Gaussian
    blur of ``jitter_px`` (independent of the noise: the pose errors of a tracker that does not choose them).
    """
    half = int(0.8 * size_px) + 16
    halves = []
    for offset in (0, 50):
        image, true_area = blurred_contrast(shape, size_px, half, 0.13, noise=0.3, seed=seed + offset, correlated=True)
        halves.append(ndimage.gaussian_filter(image, jitter_px))
    memory_image = (halves[0] + halves[1]) / 2
    smooth = ndimage.gaussian_filter(memory_image, 2.5)
    labels, _ = ndimage.label(smooth > 0.25 * float(smooth.max()))
    memory = ShapeMemory(memory_image, labels == labels[half, half], EmbeddedOptions())
    memory._halves = np.stack(halves)  # independent halves, as a tracked memory's are
    memory.n_obs = 20
    for _ in range(6):  # the boundary moves at most 2 px per refresh
        memory.refresh()
    assert memory.edge is not None
    return memory.area_px / true_area - 1, memory.edge.model


@pytest.mark.parametrize("shape, size_px", [("sphere", 80), ("sphere", 120)])
def test_a_sphere_blurred_by_a_soft_mtf_and_5px_of_jitter_keeps_its_area(shape: str, size_px: float) -> None:
    """With the blur grid ending at 3 px (until session 10) these spheres shrank by 3-4 % (5 px jitter: -3.7 /
    -3.5 % at 80 px, -3.1 / -3.9 % at 120 px); now -0.5 to +1.5 %."""
    biases = []
    for seed in (0, 1):
        bias, model = jittered_memory_area_bias(shape, size_px, 5.0, seed)
        assert model == "chord"
        biases.append(bias)
    assert abs(float(np.mean(biases))) <= 0.02, biases


@pytest.mark.parametrize("shape, size_px", [("rod", 80), ("cube", 80), ("prism", 100)])
def test_other_shapes_keep_their_area_through_the_same_blur(shape: str, size_px: float) -> None:
    for seed in (0, 1):
        bias, _ = jittered_memory_area_bias(shape, size_px, 5.0, seed)
        assert abs(bias) <= 0.05, f"{shape} seed {seed}: {bias:+.3f}"
