"""A present particle's large jump is vetted by looking where it was first (`vetting.vetted_jump`).

Robustness `distractors`, held-out sim seed 4, frame 55: a tracked sphere 44 px from an unprompted
look-alike stepped 14 px and its near search found no clear answer; the full search scored the
look-alike 2.7 z above it (the step prior's difference is ~1.4 z) and the identity gate passed the
44 px jump (a mature track's large jump: a look-alike passes any appearance test). Before
such a jump the particle is now searched for within its ordinary reach with the jump's pixels
withheld, at any age of its step model (before: only while it was young).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.embedded_helpers import run_clip
from tests.test_embedded_identity import (
    Body,
    assert_confident_frames_are_right,
    brownian,
    centroid_errors,
    point_prompt,
    render,
)


@pytest.mark.parametrize("dimmed_to", [0.16, 0.2])
def test_a_mature_track_does_not_jump_to_a_look_alike_far_away_while_it_dims(dimmed_to: float) -> None:
    """Twenty frames old (a step model of its own), the particle dims; a look-alike 42 px away is never taken."""
    n, dim_frames = 45, range(22, 30)
    x, y = brownian(n, (200.0, 250.0), 0.7, seed=22)
    rod = Body(x, y, np.full(n, 0.35))
    rod.contrast[list(dim_frames)] = dimmed_to
    lx, ly = brownian(n, (200.0 + 34.0, 250.0 + 25.0), 0.7, seed=23)  # ~42 px away
    look_alike = Body(lx, ly, np.where(np.arange(n) >= 20, 0.35, 0.0))
    frames = render([rod, look_alike], n, seed=24)
    _labels, history = run_clip(frames, [point_prompt(rod)])
    errors = centroid_errors(history, rod)
    assert [t for t, _, _ in errors if t < 20] == list(range(20)), "the lone rod must be tracked"
    moved = [(t, round(e, 1)) for t, e, _ in errors if e > 10.0]
    assert moved == [], f"the track jumped to the look-alike: {moved[:5]}"
    assert all(t in [t for t, _, _ in errors] for t in range(dim_frames.stop, n)), "tracked once it is back"
    assert_confident_frames_are_right(history, rod)
