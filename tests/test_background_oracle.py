"""The background oracle of `tools/background_oracle.py`: it rebuilds `foreign-noise`'s true background.

The session-11 diagnosis of the `foreign-noise` cell (docs/benchmarks.md, "Background model: foreign-noise") rests on the
oracle dividing frames by the condition's *true* background; if the condition changes and the rebuilt map no
longer matches it, these tests fail instead of the diagnosis silently measuring something else.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.segment.embedded.background import FlatField
from sam4em_live.sim.conditions import get_condition
from sam4em_live.sim.scenario import ScenarioClip, render_scenario
from tools.background_oracle import OracleFlatField, true_background

BLOCK_PX = 16


@pytest.fixture(scope="module")
def clip() -> ScenarioClip:
    return render_scenario(get_condition("foreign-noise").build(0, 3, "sim"), 0)


def _background_spread(pixels: np.ndarray, particles: np.ndarray) -> float:
    """Robust spread of the log 16-px block means away from the particles (texture + gains + noise)."""
    rows, cols = (s // BLOCK_PX * BLOCK_PX for s in pixels.shape)
    values = pixels[:rows, :cols].astype(np.float64)
    blocks = values.reshape(rows // BLOCK_PX, BLOCK_PX, cols // BLOCK_PX, BLOCK_PX).mean(axis=(1, 3))
    near = ndimage.binary_dilation(particles > 0, iterations=6)[:rows, :cols]
    clear = ~near.reshape(rows // BLOCK_PX, BLOCK_PX, cols // BLOCK_PX, BLOCK_PX).any(axis=(1, 3))
    logs = np.log(blocks[clear])
    return float(1.4826 * np.median(np.abs(logs - np.median(logs))))


def test_the_true_background_explains_the_frames_texture(clip: ScenarioClip) -> None:
    frame, shape = clip.frames[0].astype(np.float32), clip.frames.shape[1:]
    raw = _background_spread(frame, clip.gt_labels[0])
    divided = _background_spread(frame / true_background(0, shape), clip.gt_labels[0])
    wrong = _background_spread(frame / true_background(1, shape), clip.gt_labels[0])
    # 3 % texture plus gain steps against ~0.8 % noise per 16-px block: the true map leaves only the noise
    # (measured 3.4 % -> 0.8 %), and what it leaves averages away over frames as noise does (structure would not).
    assert raw > 0.02
    assert divided < 0.35 * raw
    assert wrong > 0.7 * raw  # another seed's texture is no explanation
    second = clip.frames[1].astype(np.float32)
    two = _background_spread((frame + second) / 2 / true_background(0, shape), clip.gt_labels[0])
    assert two < 0.85 * divided


def test_learned_is_the_backend_and_true_divides_by_the_truth(clip: ScenarioClip) -> None:
    prompts = clip.prompts("point")
    truth = true_background(0, clip.frames.shape[1:])
    backend, learned = FlatField(), OracleFlatField(truth, clip.gt_labels, "learned", 3, "all")
    oracle = OracleFlatField(truth, clip.gt_labels, "true", 1, "all")
    for i, pixels in enumerate(clip.frames):
        edits = prompts if i == 0 else []
        assert np.array_equal(learned.flatten(pixels, edits), backend.flatten(pixels, edits))
        divided = oracle.flatten(pixels, edits)
        if i == 0:
            expected = np.clip(np.rint(pixels / truth), 0, 65534).astype(pixels.dtype)
            assert np.array_equal(divided, expected)
        else:  # past its frames the oracle is the backend's own map again
            assert np.array_equal(divided, backend.flatten(pixels, edits))


def test_true_under_changes_only_the_particles_places(clip: ScenarioClip) -> None:
    truth = true_background(0, clip.frames.shape[1:])
    prompts = clip.prompts("point")
    learned = OracleFlatField(truth, clip.gt_labels, "learned", 1, "all").flatten(clip.frames[0], prompts)
    under = OracleFlatField(truth, clip.gt_labels, "true-under", 1, "all").flatten(clip.frames[0], prompts)
    places = ndimage.binary_dilation(clip.gt_labels[0] > 0, iterations=2)
    changed = learned != under
    assert changed[places].mean() > 0.5  # the learned map is not the truth under the particles
    # Elsewhere the learned map rounds the same (a pixel or two can differ by the full-resolution mean's rounding).
    assert changed[~places].mean() < 0.01
