"""How well the background under a particle is known, and the appearance memory counting its observations by it.

On the first frame the background map under a prompted particle is an interpolation from around it
(`prompt_hold_out`); the map learns those blocks only once the particle has moved off them. An appearance
learned meanwhile carries the interpolation's error, so `FlatField.known_fraction` says how much of the
background under a particle has been seen, and `ShapeMemory.update` counts an observation by it
(docs/benchmarks.md, "Background model: foreign-noise").
"""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.frames import Frame
from sam4em_live.particles import Prompt
from sam4em_live.segment.embedded import EmbeddedSegmenter
from sam4em_live.segment.embedded.background import (
    KNOWN_OBSERVATIONS,
    MIN_KNOWN_FRACTION,
    PRIOR_OBSERVATIONS,
    FlatField,
)
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.raster import PixelBox, Placement
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.sim import degrade
from sam4em_live.sim.conditions import get_condition
from sam4em_live.sim.scenario import render_scenario

SHAPE = (256, 256)
LEVEL = 2000.0
POINT = (90.0, 120.0)


def _textured(rng: np.random.Generator, texture: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """A Poisson frame of ``texture`` (with quadrant gains: the correction switches on), 6 % darker on ``dark``."""
    mean = LEVEL * texture * np.where(dark, 0.94, 1.0)
    return rng.poisson(mean).astype(np.uint16)


def _disc(x: float, y: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= radius**2


def _claim(mask: np.ndarray) -> Placement:
    rows, cols = np.nonzero(mask)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    return Placement(PixelBox(x0, y0, x1, y1), mask[y0:y1, x0:x1].copy(), int(mask.sum()))


def test_the_background_under_a_prompt_is_unknown_until_the_particle_leaves() -> None:
    rng = np.random.default_rng(3)
    gains = degrade.quadrant_gains(SHAPE, (0.97, 1.02, 1.0, 1.04))
    texture = (1 + 0.03 * degrade.fractal_texture(SHAPE, 2.0, rng)) * gains
    field = FlatField()
    prompt = Prompt(particle=1, frame=0, points=(POINT,), labels=(1,))
    here = _disc(*POINT, 14)
    field.flatten(_textured(rng, texture, here), [prompt])
    assert field.active
    assert field.known_fraction(*POINT, 14) == MIN_KNOWN_FRACTION  # only interpolated: never seen
    far = (200.0, 40.0)
    assert field.known_fraction(*far, 14) == pytest.approx(PRIOR_OBSERVATIONS / KNOWN_OBSERVATIONS)
    # Frames 0-3 with the particle still: its place stays unseen, the rest is seen on every (due) update.
    for index in range(4):
        pixels = _textured(rng, texture, here)
        field.flatten(pixels)
        field.observe(index, pixels, [_claim(here)])
    assert field.known_fraction(*POINT, 14) == MIN_KNOWN_FRACTION
    assert field.known_fraction(*far, 14) == 1.0
    # The particle moves 60 px away: its old place is seen from now on.
    there = _disc(POINT[0] + 60, POINT[1], 14)
    known = []
    for index in range(4, 4 + int(KNOWN_OBSERVATIONS)):
        pixels = _textured(rng, texture, there)
        field.flatten(pixels)
        field.observe(index, pixels, [_claim(there)])
        known.append(field.known_fraction(*POINT, 14))
    assert known == sorted(known) and known[0] < 0.5 and known[-1] == 1.0


def test_nothing_is_guessed_while_nothing_is_divided() -> None:
    rng = np.random.default_rng(4)
    field = FlatField()
    pixels = rng.poisson(np.full(SHAPE, LEVEL) * np.where(_disc(*POINT, 14), 0.94, 1.0)).astype(np.uint16)
    field.flatten(pixels, [Prompt(particle=1, frame=0, points=(POINT,), labels=(1,))])
    assert not field.active
    assert field.known_fraction(*POINT, 14) == 1.0


def _memory() -> ShapeMemory:
    yy, xx = np.mgrid[-20:21, -20:21]
    mask = xx**2 + yy**2 <= 8**2
    return ShapeMemory(np.where(mask, 1.0, 0.0).astype(np.float32), mask, EmbeddedOptions())


def test_weight_one_is_the_plain_running_mean() -> None:
    memory, options = _memory(), EmbeddedOptions()
    rng = np.random.default_rng(5)
    expected = memory.appearance.astype(np.float64)
    for n in range(2, options.memory_frames + 12):
        observation = rng.normal(0.5, 0.2, memory.appearance.shape).astype(np.float32)
        memory.update(observation)
        expected += (observation - expected) / min(n, options.memory_frames)
    assert np.allclose(memory.appearance, expected, atol=1e-5)


def test_observations_on_a_guessed_background_count_less() -> None:
    """Five observations of A at weight 0.1 (seed included), then five of B at 1: the memory is B's 10 to 1."""
    memory = _memory()
    a, b = np.zeros_like(memory.appearance), np.ones_like(memory.appearance)
    memory.appearance[...] = a
    for _ in range(5):
        memory.update(a, MIN_KNOWN_FRACTION)
    for _ in range(5):
        memory.update(b, 1.0)
    expected = 5 / (6 * MIN_KNOWN_FRACTION + 5)  # the seed counts as its first observation after it
    assert memory.appearance.mean() == pytest.approx(expected, rel=1e-4)
    assert memory.appearance.mean() > 0.85  # counted equally: 5 / 11


@pytest.mark.parametrize("condition, guessed", [("foreign-noise", True), ("clean", False)])
def test_the_segmenter_weighs_a_prompted_particles_early_appearance(condition: str, guessed: bool) -> None:
    """On a textured clip the prompted particles' first observations count less; on a flat one, fully."""
    clip = render_scenario(get_condition(condition).build(0, 5, "sim"), 0)
    segmenter = EmbeddedSegmenter()
    prompts = clip.prompts("point")
    for i, pixels in enumerate(clip.frames):
        segmenter.track(Frame("t", i, 0.0, pixels), [p for p in prompts if p.frame == i])
    for particle in segmenter.particles():
        memory = segmenter._tracks[particle].memory
        assert memory.n_obs == 5
        counted = memory._weight_total
        if guessed:
            assert counted < 0.5 * memory.n_obs
        else:
            assert counted == memory.n_obs
