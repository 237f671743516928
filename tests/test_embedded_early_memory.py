"""A young memory's first observations re-divided once the background map under them is learned (`early_memory`).

On a textured stream the first frames are divided by a map that under a prompted particle is only an
interpolation; the memory learns that error. Once the map there has been learned, the recorded observations
are corrected in the memory as if they had been divided by the learned map (docs/benchmarks.md, "Background
model: foreign-noise").
"""

from __future__ import annotations

import numpy as np

from sam4em_live.frames import Frame
from sam4em_live.segment.embedded import EmbeddedSegmenter
from sam4em_live.segment.embedded.background import MapState
from sam4em_live.segment.embedded.morphology import dilate_cross
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.segment.embedded.window import frame_window
from sam4em_live.sim import degrade
from sam4em_live.sim.conditions import get_condition
from sam4em_live.sim.scenario import render_scenario

SHAPE, FACTOR, LEVEL, RADIUS = (128, 128), 4, 1000.0, 10.0
#: Poses of the particle on the first frames (frame px, degrees): it moves and turns a little.
POSES = [(56.0 + 1.5 * k, 64.0 + 0.5 * k, 4.0 * k) for k in range(8)]


def _state(blocks: np.ndarray, active: bool = True) -> MapState:
    return MapState(SHAPE, FACTOR, blocks.astype(np.float32), 0.05, active, None)


def _full(blocks: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(blocks, FACTOR, 0), FACTOR, 1)


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """(the true background's blocks, a first-frame map wrong by ~3 % under the particle's first places)."""
    rng = np.random.default_rng(7)
    grid = (SHAPE[0] // FACTOR, SHAPE[1] // FACTOR)
    truth = (1 + 0.03 * degrade.fractal_texture(grid, 2.0, rng)).astype(np.float32)
    rows, cols = np.mgrid[0 : grid[0], 0 : grid[1]]
    bump = np.exp(-((cols - 15.5) ** 2 + (rows - 16.5) ** 2) / (2 * 4.0**2))
    guessed = truth * (1 + 0.04 * bump - 0.02 * (cols - 15.5) / 8 * bump)  # an offset and a tilt under it
    return truth, guessed.astype(np.float32)


def _darkness(blocks: np.ndarray, x: float, y: float, half: int) -> tuple[np.ndarray, float, float]:
    """The frame (a dark disc at (x, y) on the true background) divided by ``blocks``: a window's darkness."""
    truth, _ = _maps()
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    disc = (xx - x) ** 2 + (yy - y) ** 2 <= RADIUS**2
    raw = LEVEL * _full(truth) * np.where(disc, 0.94, 1.0)
    x0, y0 = round(x) - half, round(y) - half
    window = frame_window((raw / _full(blocks)).astype(np.float32), x0, y0, 2 * half + 1, 2 * half + 1, 1.0)
    return window.darkness, x - x0, y - y0


def _learned(divided_by: np.ndarray, corrected_with: np.ndarray | None) -> ShapeMemory:
    """A memory seeded and learned on the first `POSES`, each frame divided by ``divided_by``'s map."""
    yy, xx = np.mgrid[-24:25, -24:25]
    mask = xx**2 + yy**2 <= RADIUS**2
    probe = ShapeMemory(mask.astype(np.float32), mask, EmbeddedOptions())
    reach = probe.observe_reach_px(45.0)
    x, y, angle = POSES[0]
    memory = ShapeMemory(probe.observe(*_darkness(divided_by, x, y, reach), angle), mask, EmbeddedOptions())
    state = _state(divided_by)
    for x, y, angle in POSES[1:]:
        memory.early.before_learn(memory, state, x, y, angle, 1.0, refreshing=False)
        memory.update(memory.observe(*_darkness(divided_by, x, y, reach), angle))
    if corrected_with is not None:
        memory.early.rebase(memory, _state(corrected_with), 1.0)
    return memory


def test_a_rebased_memory_is_the_memory_learned_on_the_new_map() -> None:
    truth, guessed = _maps()
    right = _learned(truth, None).appearance
    wrong = _learned(guessed, None).appearance
    rebased = _learned(guessed, truth)
    inner = dilate_cross(rebased.mask, 3)  # corrected under the particle only (`EarlyObservations.rebase`)
    before = float(np.sqrt(np.mean((wrong - right)[inner] ** 2)))
    after = float(np.sqrt(np.mean((rebased.appearance - right)[inner] ** 2)))
    assert before > 0.006  # the guessed map's error is in the memory (0.9 % rms)
    assert after < 0.15 * before
    assert rebased.early.entries  # the seed and the observations stay recorded while the memory is young
    for half in (0, 1):  # each half is corrected by its own observations' shares
        assert float(np.abs(rebased._halves[half] - _learned(truth, None)._halves[half])[inner].mean()) < 0.002  # 0.75 % without


def test_nothing_is_recorded_or_changed_while_the_map_divides_nothing() -> None:
    truth, guessed = _maps()
    memory = _learned(guessed, None)
    memory.early.entries.clear()
    yy, xx = np.mgrid[-24:25, -24:25]
    mask = xx**2 + yy**2 <= RADIUS**2
    flat = ShapeMemory(np.where(mask, 0.06, 0.0).astype(np.float32), mask, EmbeddedOptions())
    for x, y, angle in POSES[1:]:
        flat.early.before_learn(flat, _state(guessed, active=False), x, y, angle, 1.0, refreshing=True)
        flat.update(np.where(mask, 0.06, 0.0).astype(np.float32))
    before = flat.appearance.copy()
    flat.early.rebase(flat, _state(truth), 1.0)
    assert not flat.early.entries
    assert np.array_equal(flat.appearance, before)


def test_the_segmenter_records_early_observations_on_textured_streams_only() -> None:
    for condition, textured in (("foreign-noise", True), ("clean", False)):
        clip = render_scenario(get_condition(condition).build(0, 4, "sim"), 0)
        segmenter = EmbeddedSegmenter()
        prompts = clip.prompts("point")
        for i, pixels in enumerate(clip.frames):
            segmenter.track(Frame("t", i, 0.0, pixels), [p for p in prompts if p.frame == i])
        for particle in segmenter.particles():
            entries = segmenter._tracks[particle].memory.early.entries
            # The seed and the learns of frames 1-2 at least (a frame's learn may wait for the next frame).
            assert (len(entries) >= 3) if textured else not entries, (condition, particle, len(entries))
