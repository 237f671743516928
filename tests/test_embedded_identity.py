"""Identity integrity and calibrated confidence of the embedded backend (issue 16: "lost beats wrong").

Synthetic 8-bit frames built here reproduce the failure seen on a real video: a rod fades for a while
near nothing, and a static dark blob of the same size and contrast sits at the image edge ~300 px
away. It must stay lost (absent, low score), never hop onto the blob; an unprompted, darker particle
passing close while the tracked one fades must not take its id; a particle that re-appears within a
plausible distance is re-acquired with its id. Scores at or above the documented threshold (0.5) are
right (centroid within 2 px).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pytest

from sam4em_live.particles import Prompt
from sam4em_live.segment.embedded.identity import (
    MAX_JUMP,
    STATIC_FRACTION,
    Candidate,
    History,
    StepModel,
    needs_gate,
    refusal,
)
from sam4em_live.segment.embedded.static_map import StaticMap
from tests.embedded_helpers import run_clip

SHAPE = (512, 512)
BACKGROUND = 150.0
NOISE = 18.0
CONFIDENT_SCORE = 0.5  # docs/embedded_backend.md, "Presence and score"


@dataclass(frozen=True)
class Body:
    """A dark ellipse's path: per-frame centre (x, y) and contrast (fraction of the background removed)."""

    x: np.ndarray
    y: np.ndarray
    contrast: np.ndarray
    semi_axes: tuple[float, float] = (13.0, 6.0)
    angle_deg: float = 30.0


def render(bodies: list[Body], n_frames: int, seed: int) -> np.ndarray:
    """uint8 frames: flat background, soft-edged dark ellipses, Gaussian noise, 8-bit quantisation."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float32)
    frames = np.empty((n_frames, *SHAPE), np.uint8)
    for t in range(n_frames):
        transmission = np.ones(SHAPE, np.float32)
        for body in bodies:
            if body.contrast[t] <= 0:
                continue
            a, b = body.semi_axes
            theta = math.radians(body.angle_deg)
            dx, dy = cols - body.x[t], rows - body.y[t]
            u = (dx * math.cos(theta) + dy * math.sin(theta)) / a
            v = (-dx * math.sin(theta) + dy * math.cos(theta)) / b
            inside = np.clip((1.0 - np.sqrt(u * u + v * v)) * min(a, b) / 1.5 + 0.5, 0.0, 1.0)
            transmission -= body.contrast[t] * inside
        image = BACKGROUND * transmission + rng.normal(0.0, NOISE, SHAPE)
        frames[t] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return frames


def brownian(n_frames: int, start: tuple[float, float], sigma_px: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    steps = np.random.default_rng(seed).normal(0.0, sigma_px, (n_frames, 2))
    steps[0] = 0.0
    path = np.asarray(start) + np.cumsum(steps, axis=0)
    return path[:, 0], path[:, 1]


def fading(n_frames: int, level: float, gone: range) -> np.ndarray:
    contrast = np.full(n_frames, level)
    contrast[list(gone)] = 0.0
    return contrast


def point_prompt(body: Body, particle: int = 1) -> Prompt:
    return Prompt(particle=particle, frame=0, points=((float(body.x[0]), float(body.y[0])),), labels=(1,))


def centroid_errors(history, body: Body, particle: int = 1) -> list[tuple[int, float, float]]:
    """(frame, centroid error px, score) of every frame the particle is reported present."""
    out = []
    for t, masks in enumerate(history):
        mask = next(m for m in masks if m.particle == particle)
        if mask.present:
            x, y = float(mask.extras["x"]), float(mask.extras["y"])
            out.append((t, math.hypot(x - body.x[t], y - body.y[t]), mask.score))
    return out


def assert_confident_frames_are_right(history, body: Body) -> None:
    for t, error, score in centroid_errors(history, body):
        if score >= CONFIDENT_SCORE:
            assert error <= 2.0, f"frame {t}: score {score:.2f} but {error:.1f} px off"
    for t, masks in enumerate(history):
        for mask in masks:
            if not mask.present:
                assert mask.score < CONFIDENT_SCORE, f"frame {t}: absent with score {mask.score:.2f}"


N_FRAMES = 90


@pytest.fixture(scope="module")
def fade_near_static_blob():
    """The reported failure: the rod fades out for good at frame 30; a look-alike static blob sits at the edge."""
    x, y = brownian(N_FRAMES, (170.0, 250.0), 1.0, seed=3)
    rod = Body(x, y, fading(N_FRAMES, 0.35, range(30, N_FRAMES)))
    blob = Body(np.full(N_FRAMES, 497.0), np.full(N_FRAMES, 250.0), np.full(N_FRAMES, 0.35))
    return render([rod, blob], N_FRAMES, seed=4), rod


def test_a_faded_particle_stays_lost_instead_of_hopping_onto_a_static_blob(fade_near_static_blob, caplog) -> None:
    frames, rod = fade_near_static_blob
    with caplog.at_level(logging.DEBUG, logger="sam4em_live.segment.embedded.segmenter"):
        _labels, history = run_clip(frames, [point_prompt(rod)])
    # Lost for 60 frames, the blob is within the rod's motion budget at the end: the static map refuses it.
    assert "on a static feature" in caplog.text
    present = [t for t, masks in enumerate(history) if masks[0].present]
    assert present[:25] == list(range(25)), "the visible rod must be tracked"
    hops = [(t, e) for t, e, _ in centroid_errors(history, rod) if t >= 30 or e > 10.0]
    assert hops == [], f"reported present while faded / far from the rod: {hops[:5]}"
    assert_confident_frames_are_right(history, rod)


def test_a_particle_reappearing_within_a_plausible_distance_keeps_its_id() -> None:
    x, y = brownian(N_FRAMES, (170.0, 250.0), 1.0, seed=5)
    rod = Body(x, y, fading(N_FRAMES, 0.35, range(30, 42)))
    blob = Body(np.full(N_FRAMES, 497.0), np.full(N_FRAMES, 250.0), np.full(N_FRAMES, 0.35))
    frames = render([rod, blob], N_FRAMES, seed=6)
    _labels, history = run_clip(frames, [point_prompt(rod)])
    errors = centroid_errors(history, rod)
    assert all(e <= 10.0 for _, e, _ in errors), "never reported away from the rod"
    back = [t for t, _, _ in errors if t >= 42]
    assert back and back[0] <= 46, f"re-acquired late or never: {back[:3]}"
    assert len(back) >= N_FRAMES - 46
    assert_confident_frames_are_right(history, rod)


def test_a_darker_distractor_passing_while_the_particle_fades_does_not_take_its_id() -> None:
    x, y = brownian(N_FRAMES, (200.0, 250.0), 0.8, seed=7)
    rod = Body(x, y, fading(N_FRAMES, 0.3, range(38, 44)))
    # An unprompted particle crossing the field at 7 px a frame, closest (~22 px) at frame 40, twice as dark.
    t = np.arange(N_FRAMES, dtype=float)
    distractor = Body(200.0 + 7.0 * (t - 40), np.full(N_FRAMES, 272.0), np.full(N_FRAMES, 0.6), angle_deg=-20.0)
    frames = render([rod, distractor], N_FRAMES, seed=8)
    _labels, history = run_clip(frames, [point_prompt(rod)])
    errors = centroid_errors(history, rod)
    stolen = [(t, round(e, 1)) for t, e, _ in errors if e > 10.0]
    assert stolen == [], f"the distractor took the rod's id: {stolen[:5]}"
    assert [t for t, _, _ in errors if t >= 44][:1] == [44] or any(t >= 44 for t, _, _ in errors)
    assert_confident_frames_are_right(history, rod)


# ---------------------------------------------------------------- the gate and the static map on their own


def test_gate_refuses_huge_jumps_and_wrong_appearance_but_admits_ordinary_ones() -> None:
    steps = StepModel(default_scale_px=6.0)
    for _ in range(16):
        steps.add(2.0)
    present = History(100.0, 100.0, True, 0, 20.0, 0.3, steps.budget_px(10.0, 0))
    near = Candidate(103.0, 100.0, 8.0, 0.1, 1.0, 1.0)
    assert not needs_gate(near, present)  # an ordinary step: no gate at all
    far_like_itself = Candidate(120.0, 100.0, 19.0, 0.3, 1.0, 1.0)  # 10 step scales, looks like itself
    assert needs_gate(far_like_itself, present) and refusal(far_like_itself, present) is None
    assert refusal(far_like_itself._replace(z=12.0), present) is not None  # weak for a large jump
    assert refusal(far_like_itself._replace(amplitude=0.6), present) is not None  # twice as dark
    assert refusal(far_like_itself._replace(exclusive=0.5), present) is not None  # on another particle
    # Half out of the field: judged against the z its visible part should give.
    assert refusal(far_like_itself._replace(z=14.0, visible=0.5), present) is None
    huge = Candidate(100.0 + 2.0 * (MAX_JUMP + 1), 100.0, 40.0, 0.3, 1.0, 1.0)
    assert refusal(huge, present) is not None
    # The budget grows with the frames lost: the same distance is ordinary after a long loss.
    lost_long = History(100.0, 100.0, False, 200, 20.0, 0.3, steps.budget_px(10.0, 200))
    assert refusal(huge._replace(z=12.0), lost_long) is None


def test_static_map_knows_a_blob_that_never_moves_but_not_a_moving_one() -> None:
    n = 48
    t = np.arange(n, dtype=float)
    still = Body(np.full(n, 100.0), np.full(n, 100.0), np.full(n, 0.35))
    mover = Body(60.0 + 6.0 * t, np.full(n, 300.0), np.full(n, 0.35))
    frames = render([still, mover], n, seed=9)
    static = StaticMap()
    for i, pixels in enumerate(frames):
        static.observe(i, pixels, [])
    last = frames[-1]
    assert static.explains(last, 100.0, 100.0, 12.0, 1.0) > 0.8
    assert static.explains(last, float(mover.x[-1]), 300.0, 12.0, 1.0) < 0.3
    # Blocks kept out (a lost particle's last place) are never learned.
    kept = StaticMap()
    for i, pixels in enumerate(frames):
        kept.observe(i, pixels, [], keep_out=[(100.0, 100.0, 14.0)])
    assert kept.explains(last, 100.0, 100.0, 12.0, 1.0) == 0.0


def test_a_blanked_beam_reports_every_particle_absent_and_tracking_resumes() -> None:
    x, y = brownian(40, (200.0, 250.0), 1.0, seed=10)
    rod = Body(x, y, np.full(40, 0.35))
    frames = render([rod], 40, seed=11)
    frames[20:22] = np.round(frames[20:22] * 0.02).astype(np.uint8)  # beam blanked: 2 % of the dose
    _labels, history = run_clip(frames, [point_prompt(rod)])
    assert [masks[0].present for masks in history[19:24]] == [True, False, False, True, True]
    assert history[20][0].score == 0.0
    assert all(e <= 2.0 for t, e, _ in centroid_errors(history, rod) if t >= 22)


@pytest.mark.parametrize("dimmed_to, dim_frames", [(0.16, range(3, 9)), (0.0, range(3, 4))])
def test_a_young_track_does_not_jump_to_a_look_alike_appearing_far_away_while_it_dims(dimmed_to, dim_frames) -> None:
    """Three frames old, the particle dims; a look-alike appears 45 px away: never reported there.

    A 3-frame-old track took such a jump on the option's 6 px step scale (7.5 scales: a look-alike passes
    any appearance test). Dimmed to under half its contrast for 6 frames, it is looked for where it was
    before the jump (`vetting.vetted_jump`) and stays; gone for a frame, the jump needs more than a
    look-alike's z from a young track (`identity.YOUNG_COST_GAIN`): absent, not moved.
    """
    n = 30
    x, y = brownian(n, (200.0, 250.0), 0.7, seed=12)
    rod = Body(x, y, np.full(n, 0.35))
    rod.contrast[list(dim_frames)] = dimmed_to
    lx, ly = brownian(n, (200.0 + 36.0, 250.0 + 27.0), 0.7, seed=13)  # 45 px away
    look_alike = Body(lx, ly, np.where(np.arange(n) >= 3, 0.35, 0.0))
    frames = render([rod, look_alike], n, seed=14)
    _labels, history = run_clip(frames, [point_prompt(rod)])
    errors = centroid_errors(history, rod)
    assert [t for t, _, _ in errors if t < 3] == [0, 1, 2], "the visible rod must be tracked"
    moved = [(t, round(e, 1)) for t, e, _ in errors if e > 10.0]
    assert moved == [], f"the young track jumped to the look-alike: {moved[:5]}"
    assert all(t in [t for t, _, _ in errors] for t in range(dim_frames.stop, n)), "tracked once it is back"
    assert_confident_frames_are_right(history, rod)


def test_a_young_memory_that_splits_does_not_carry_the_pose_onto_one_of_the_pair() -> None:
    """A seed that took in two particles splits at the first shape refresh: the pose moves a fraction of a radius.

    The memory re-centres on one of the pair (14 px away); moving the pose with it was a jump no gate saw
    (robustness `dense`: 25-35 px at frame 3). The rest is left to the next search and its identity gate.
    """
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.shape import ShapeMemory
    from sam4em_live.segment.embedded.tracker import MAX_RECENTRE_RADII, TrackedParticle

    half = 30
    v, u = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    pair = ((u - 14) ** 2 + v**2 <= 64) | ((u + 14) ** 2 + v**2 <= 64)
    dumbbell = pair | ((np.abs(u) <= 14) & (np.abs(v) <= 3))  # the seed's mask takes in both and the gap
    memory = ShapeMemory(pair.astype(np.float32), dumbbell, EmbeddedOptions())
    track = TrackedParticle(1, memory, 1.0, 100.0, 100.0, 0.0, 1.0, 20.0)
    window = np.zeros((101, 101), np.float32)
    window[50 - half : 51 + half, 50 - half : 51 + half] = pair
    moved = 0.0
    for _ in range(4):
        before = (track.x, track.y)
        track.learn_shape(window, 50.0, 50.0)
        moved = max(moved, math.hypot(track.x - before[0], track.y - before[1]))
    assert memory.area_px < 0.7 * int(dumbbell.sum()), "the memory split onto one of the pair"
    assert moved <= max(2.0, MAX_RECENTRE_RADII * memory.radius_px) + 1e-6, f"the pose jumped {moved:.1f} px"


def test_a_dose_step_does_not_make_a_tracked_particles_place_a_static_feature() -> None:
    """The map is learned on exposure-normalised frames: blocks withheld under a particle keep the old dose's
    level, and a raw map showed them as a static feature after a x1.6 dose step (the particle refused there).
    """
    n = 64
    still = Body(np.full(n, 200.0), np.full(n, 250.0), np.full(n, 0.35))
    empty = render([], n, seed=12)
    with_particle = render([still], n, seed=12)
    static = StaticMap()
    for i in range(16):  # the whole frame learned at the first dose, nobody tracked yet
        static.observe(i, empty[i], [])
    for i in range(16, n):  # a tracked particle sits there (kept out) while the dose steps up x1.6
        brighter = np.clip(with_particle[i] * 1.6, 0, 255).astype(np.uint8)
        static.observe(i, brighter, [], keep_out=[(200.0, 250.0, 14.0)])
    now = np.clip(with_particle[-1] * 1.6, 0, 255).astype(np.uint8)
    assert static.explains(now, 200.0, 250.0, 12.0, 1.0) < STATIC_FRACTION
    assert static.features is not None and not static.features.any()
