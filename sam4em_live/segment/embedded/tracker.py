"""One tracked particle: pose, motion, presence and its appearance memory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scipy import fft as sfft

from sam4em_live.segment.embedded.identity import History, StepModel
from sam4em_live.segment.embedded.search import MotionPrior, PoseEstimate
from sam4em_live.segment.embedded.window import WindowExtent

if TYPE_CHECKING:
    import numpy as np

    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.shape import ShapeMemory

#: Exponential weight of the running contrast / z references and of the velocity estimate.
REFERENCE_WEIGHT = 0.1
VELOCITY_WEIGHT = 0.5
#: Contrast and z threshold factors for a particle that was present in the previous frame (hysteresis).
PRESENCE_HOLD = 0.8
Z_HOLD = 0.7  # 0.7 x the default 6 z is still above the best pure-noise match in a search window (~3.5 z)
#: Fraction of the last velocity kept in the prediction (heavy-tailed hops have little persistence).
VELOCITY_DAMPING = 0.5
#: Refresh the derived shape every this many observations (more often while the memory is young).
REFRESH_EVERY_YOUNG, REFRESH_EVERY = 2, 8
YOUNG_MEMORY_FRAMES = 16
#: Learns counted towards the first steady refresh, before `TrackedParticle.refresh_phase`: a lone particle 1's
#: count when its memory fills (its last filling refresh on the learn before), so its schedule is kept.
FILLED_COUNT = 1
#: A shape refresh moves the pose with the memory's new centre by at most this fraction of the radius
#: (and at least this many px): a larger re-centring is left to the next search and its identity gate.
MAX_RECENTRE_RADII, MAX_RECENTRE_PX = 0.25, 2.0
#: A refresh that changes the mask's area by more than this factor changed what the memory describes (a seed
#: of several particles split onto one): its contrast and z references are taken afresh from the next match.
RECALIBRATE_AREA_FACTOR = 2.0


def clip_to_unit_interval(value: float) -> float:
    """``float(np.clip(value, 0.0, 1.0))`` for a Python float, without numpy's ~10 us for a scalar.

    The same value in every case, as numpy's clip loop gives it: NaN and -0.0 pass unchanged.
    """
    if value != value or 0.0 <= value <= 1.0:  # NaN, or inside
        return value
    return 0.0 if value < 0.0 else 1.0


@dataclass
class TrackedParticle:
    """State of one particle between frames (frame pixels, degrees)."""

    particle: int
    memory: ShapeMemory
    polarity: float
    x: float
    y: float
    angle_deg: float
    amplitude_ref: float
    z_ref: float
    present: bool = True
    frames_lost: int = 0
    last_z: float = 0.0
    velocity: tuple[float, float] = (0.0, 0.0)
    frames_since_update: int = 0
    learning_deferred: int = 0
    references_stale: bool = False  # `RECALIBRATE_AREA_FACTOR`: the next accepted match sets the references
    window_cells: int = field(init=False)
    near_window_cells: int = field(init=False)
    steps: StepModel = field(init=False)  # its own step lengths: the identity gate's motion model

    def __post_init__(self) -> None:
        options = self.memory.options
        self.steps = StepModel(options.step_prior_scale_px)
        self.window_cells = self._window_cells(options.search_radius_px)
        self.near_window_cells = self._window_cells(min(options.near_search_radius_px, options.search_radius_px))
        self.memory.noise_phase = self.particle - 1  # particle 1 keeps the schedule of the figures so far

    def _window_cells(self, search_radius_px: float) -> int:
        reach = search_radius_px + self.memory.half
        cells = 2 * int(math.ceil(reach / self.memory.coarse_factor)) + 1
        return int(sfft.next_fast_len(cells, real=True))

    def window_origin(self, x: float, y: float, near: bool = False) -> WindowExtent:
        """The (full or near) search window centred on (x, y)."""
        f = self.memory.coarse_factor
        cells = self.near_window_cells if near else self.window_cells
        edge = cells * f
        offset = (cells - 1) / 2 * f + (f - 1) / 2
        return WindowExtent(int(round(x - offset)), int(round(y - offset)), edge)

    def prior(self, options: EmbeddedOptions, reacquire: bool = False) -> MotionPrior:
        if reacquire:
            return MotionPrior(self.x, self.y, self.angle_deg, math.inf, options.step_prior_scale_px,
                               options.turn_prior_sigma_deg, 0.0, 0.0)
        vx, vy = self.velocity
        return MotionPrior(
            self.x + VELOCITY_DAMPING * vx, self.y + VELOCITY_DAMPING * vy, self.angle_deg,
            options.search_radius_px, options.step_prior_scale_px, options.turn_prior_sigma_deg,
            options.step_prior_weight_z, options.turn_prior_weight_z,
        )

    def visible_amplitude(self, estimate: PoseEstimate, visible_fraction: float) -> float:
        """Contrast of the visible part (the masked match already normalises by visibility)."""
        return estimate.amplitude if visible_fraction > 0 else 0.0

    def is_detection(self, estimate: PoseEstimate, visible_fraction: float, options: EmbeddedOptions,
                     strict: bool = False) -> bool:
        """Whether a match is the particle: clear of noise and about as contrasted as learned.

        Hysteresis: a particle present in the previous frame keeps being present down to
        `PRESENCE_HOLD` of the contrast threshold and `Z_HOLD` of the z threshold (a single
        noisy frame of a small, faint particle does not flicker it off); appearing or
        re-appearing needs the full thresholds.
        """
        tighten = 1.3 if strict else 1.0
        holding = self.present and not strict
        hold = PRESENCE_HOLD if holding else 1.0
        return (estimate.z >= options.min_detection_z * tighten * (Z_HOLD if holding else 1.0)
                and self.visible_amplitude(estimate, visible_fraction)
                >= min(0.95, options.presence_fraction * tighten) * hold * self.amplitude_ref)

    def confidence(self, estimate: PoseEstimate, visible_fraction: float, options: EmbeddedOptions) -> float:
        contrast = self.visible_amplitude(estimate, visible_fraction) / max(self.amplitude_ref, 1e-9)
        evidence = estimate.z / (2 * options.min_detection_z)
        return clip_to_unit_interval(min(contrast, evidence))

    def accept(self, estimate: PoseEstimate) -> None:
        """Move to a detected pose and update motion and references."""
        if self.present:
            self.steps.add(math.hypot(estimate.x - self.x, estimate.y - self.y))
            vx, vy = self.velocity
            self.velocity = (vx + VELOCITY_WEIGHT * (estimate.x - self.x - vx),
                             vy + VELOCITY_WEIGHT * (estimate.y - self.y - vy))
        else:
            self.velocity = (0.0, 0.0)
        self.x, self.y, self.angle_deg = estimate.x, estimate.y, estimate.angle_deg
        self.present, self.frames_lost, self.last_z = True, 0, estimate.z
        if self.references_stale:  # references of a memory that described more than this particle
            self.amplitude_ref, self.z_ref, self.references_stale = estimate.amplitude, estimate.z, False

    def history(self) -> History:
        """The particle's side of the identity gate (`identity.refusal`)."""
        budget = self.steps.budget_px(self.memory.radius_px, self.frames_lost)
        return History(self.x, self.y, self.present, self.frames_lost, self.z_ref, self.amplitude_ref, budget,
                       self.steps.youth)

    def learn_references(self, estimate: PoseEstimate) -> None:
        self.amplitude_ref += REFERENCE_WEIGHT * (estimate.amplitude - self.amplitude_ref)
        self.z_ref += REFERENCE_WEIGHT * (estimate.z - self.z_ref)

    def lose(self) -> None:
        self.present, self.velocity, self.last_z = False, (0.0, 0.0), 0.0
        self.frames_lost += 1

    def next_refresh_overdue(self) -> int | None:
        """Learns by which the next learn's shape refresh is overdue (0: just due); None if it is not due."""
        count, due = self._schedule_after_next_learn()
        return count - due if count >= due else None

    def _schedule_after_next_learn(self) -> tuple[int, int]:
        """(learns counted towards the next refresh, learns between refreshes) once one more is folded in."""
        n_obs = self.memory.n_obs + 1
        count = self.frames_since_update + 1
        if n_obs < YOUNG_MEMORY_FRAMES:
            due = REFRESH_EVERY_YOUNG
        else:
            due = REFRESH_EVERY if n_obs < self.memory.options.memory_frames else 4 * REFRESH_EVERY
        if n_obs == self.memory.options.memory_frames:  # the memory is full: steady refreshes
            count = (FILLED_COUNT + self.refresh_phase()) % due  # the filling count dropped: `refresh_phase`
        elif n_obs in (2, YOUNG_MEMORY_FRAMES):  # a schedule starts (first learn, or grown up): out of step
            count = (count + self.particle - 1) % due
        return count, due

    def learn_shape(self, darkness: np.ndarray, x_win: float, y_win: float, may_refresh: bool = True,
                    weight: float = 1.0) -> bool:
        """Fold this frame's aligned appearance into memory; re-derive the shape when due. True if it did.

        ``may_refresh`` False puts a due refresh off: it stays due and is made at a later learn (the
        segmenter spreads the refreshes of memories filling together over frames, `EmbeddedSegmenter._learn`).
        ``weight``: how much this observation counts in the memory (`ShapeMemory.update`).
        """
        self.frames_since_update, due = self._schedule_after_next_learn()
        self.memory.update(self.memory.observe(darkness, x_win, y_win, self.angle_deg), weight)
        if self.frames_since_update >= due and may_refresh:
            self.frames_since_update = 0
            area = self.memory.area_px
            du, dv = self.memory.refresh()
            if not 1 / RECALIBRATE_AREA_FACTOR <= self.memory.area_px / max(area, 1) <= RECALIBRATE_AREA_FACTOR:
                self.references_stale = True
            # The pose follows the re-centred memory by at most `MAX_RECENTRE_RADII` of its radius: a young
            # memory that split (a seed that took in a neighbour) re-centred by 25-35 px onto one of the
            # pair, and moving the pose there was a jump no gate saw. The rest is found by the next
            # frame's search, where a large jump meets the identity gate like any other.
            shift = math.hypot(du, dv)
            cap = max(MAX_RECENTRE_PX, MAX_RECENTRE_RADII * self.memory.radius_px)
            if shift > cap:
                du, dv = du * cap / shift, dv * cap / shift
            t = math.radians(self.angle_deg)
            self.x += du * math.cos(t) - dv * math.sin(t)
            self.y += du * math.sin(t) + dv * math.cos(t)
            return True
        return False

    def refresh_phase(self) -> int:
        """Learns added to the count towards the first steady refresh: particles prompted together spread out.

        The filling memory's schedules (a refresh every `REFRESH_EVERY_YOUNG` learns, then every
        `REFRESH_EVERY`) start offset by the particle's id the same way: 4 particles prompted on one frame
        learn on every frame while their memories fill, and refreshing together they made 15-30 ms frames
        every 2nd and 8th frame after they landed, 20-60 frames dropped at a 200 fps camera (issue 23).

        Once the memory is full a particle learns every ``appearance_update_interval_frames`` frames on its
        own phase (particle id mod the interval, `learning_schedule.learning_due`) and re-derives its shape
        every ``4 * REFRESH_EVERY`` learns. Particles prompted on one frame fill their memories in step, so
        without this their refreshes (the costliest step, ~2-6 ms each) fell on the same few frames every
        128 frames (50 particles: 55-86 ms frames, issue 23). Consecutive ids share a learning phase every
        ``interval`` ids, and these get consecutive counts: up to 128 particles refresh one per frame.
        The count a memory had while filling is not carried over: memories filling together take turns
        (`learning_schedule.filling_refreshes_due`), which leaves their counts unequal, and two ids of one
        learning phase met (16 particles: two refreshes on one frame on 6 of every 128 frames, the p99).
        """
        interval = self.memory.options.appearance_update_interval_frames
        return ((self.particle - 1) // interval) % (4 * REFRESH_EVERY)
