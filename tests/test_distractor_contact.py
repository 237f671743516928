"""A look-alike that comes over a tracked particle: absent while unclear, never handed over (`contact`).

Robustness `distractors`, held-out sim seed 3: an unprompted, darker sphere lay over the tracked rod for
16 frames; the rod's references learned the pair (contrast 1.8x), and when the two parted the track
stayed on the sphere for the rest of the clip (44 hop frames). Here a lone particle is tracked long
enough for a mature memory, a darker, rounder look-alike comes over it and stays while the particle
walks away: the particle must never be reported on the look-alike.
"""

from __future__ import annotations

import numpy as np

from sam4em_live.segment.embedded.contact import _touch, explained_away
from sam4em_live.segment.embedded.raster import Placement
from tests.embedded_helpers import run_clip
from tests.test_embedded_identity import Body, centroid_errors, point_prompt, render


def test_a_look_alike_over_the_particle_does_not_take_its_id_when_they_part() -> None:
    n, over = 70, range(30, 45)
    t = np.arange(n, dtype=float)
    # The particle rests at (200, 250) until frame 45, then walks away 2 px a frame along x.
    x = 200.0 + np.clip(t - 45, 0, None) * 2.0
    y = np.full(n, 250.0)
    rod = Body(x, y, np.full(n, 0.3))
    # The look-alike comes in from 60 px away, lies over the particle for frames 30-44 and stays there.
    lx = np.where(t < over.start, 200.0 - 2.0 * (over.start - t), 200.0)
    lx = np.maximum(lx, 140.0)
    sphere = Body(lx, np.full(n, 250.0), np.where(t >= 10, 0.42, 0.0), semi_axes=(9.0, 9.0), angle_deg=0.0)
    frames = render([rod, sphere], n, seed=31)
    _labels, history = run_clip(frames, [point_prompt(rod)])
    errors = centroid_errors(history, rod)
    assert [f for f, _, _ in errors if f < 18] == list(range(18)), "the lone particle must be tracked"
    wrong = [(f, round(e, 1)) for f, e, _ in errors if e > 10.0]
    assert wrong == [], f"reported on the look-alike: {wrong[:5]}"  # before the contact module: frames 51-69


def test_explained_away_takes_the_particles_own_appearance_out_of_the_frame() -> None:
    n = 30
    rod = Body(np.full(n, 200.0), np.full(n, 250.0), np.full(n, 0.3))
    frames = render([rod], n, seed=5)
    from sam4em_live.frames import Frame
    from sam4em_live.segment.registry import create_segmenter

    segmenter = create_segmenter("embedded", {})
    for i, pixels in enumerate(frames):
        segmenter.track(Frame("t", i, 0.0, pixels), [point_prompt(rod)] if i == 0 else [])
    track = segmenter._tracks[1]  # type: ignore[attr-defined]
    estimate, background = segmenter._search(frames[-1], track, [])  # type: ignore[attr-defined]
    assert estimate is not None
    residual = explained_away(frames[-1], track, estimate, background)
    box = (slice(240, 261), slice(188, 213))
    before = 150.0 - float(frames[-1][box].astype(np.float32).mean())
    after = 150.0 - float(residual[box].mean())
    assert before > 20.0
    assert abs(after) < 0.25 * before, f"contrast left {after:.1f} of {before:.1f}"


def test_masks_touch_within_the_gap_and_not_beyond() -> None:
    square = np.ones((5, 5), dtype=bool)
    a = Placement((10, 10, 15, 15), square, 25)
    near = Placement((17, 10, 22, 15), square, 25)  # 2 px gap
    far = Placement((25, 10, 30, 15), square, 25)  # 10 px gap
    assert _touch(a, near)
    assert not _touch(a, far)


def test_after_parting_ours_is_the_body_that_looks_like_it_or_the_only_one_like_it_at_all() -> None:
    from sam4em_live.segment.embedded.contact import ours_after_parting

    assert ours_after_parting(0.85, 0.70)  # like itself, and clearly more than the other
    assert not ours_after_parting(0.85, 0.82)  # two look-alikes: undecided, absent
    assert not ours_after_parting(0.60, 0.50)  # neither reads like it did
    # a body unlike the particle before the contact (a grown seed) beside a body unlike any particle (texture)
    assert ours_after_parting(0.596, -0.363)
    assert not ours_after_parting(0.586, -0.134) and not ours_after_parting(0.565, 0.141)  # within the clear margin
    assert not ours_after_parting(0.45, -0.9)  # too little like itself, whatever the other
