"""The identity gate: whether a match far from where a particle was, or after a loss, may carry its id.

"Lost beats wrong" (issue 16): a particle handed to something that is not it yields one fake
displacement of hundreds of pixels (it dominates the tail of the displacement distribution and
bends the MSD) and a wrong track from then on; a missed frame costs one sample. So a re-acquisition
(any detection of a particle that was lost) and a large jump of a present particle are accepted
only when *all* of these hold:

- **motion**: the step, measured in the particle's own step scale (`StepModel`, the 80th percentile
  of its recent accepted steps; while it has too few, the option's) widened with the frames it has been lost (budget ``(1 + lost)^0.75``:
  between diffusive and ballistic), is at most `MAX_JUMP` scales;
- **appearance**, relative to the particle's own history: the match z is at least a fraction of its
  typical z (scaled by the square root of the visible fraction: a particle half out of the field
  matches with ~0.7 of its z) and its contrast within a band around its learned contrast; the fraction rises with the
  jump's cost ``log(1 + u²)`` (a heavy, Cauchy-like tail: a large jump needs strong evidence, a huge
  one more — beyond about 20 scales more than the particle's typical frame), and more while the
  particle's step model is young (it has not yet shown how far it moves);
- **exclusivity**: its pixels in the frame are (almost) all unclaimed (not on another tracked particle);
- **not static**: the long-run background (`static_map.StaticMap`) does not already show most of the
  contrast seen there (a feature that never moves is not a particle that was just lost).

An ordinary step of a present particle (at most `PLAUSIBLE_JUMP` scales) skips the gate: the
per-frame path costs nothing more.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

#: Steps kept per particle, and how many it needs before its own scale replaces the option's.
STEP_HISTORY = 64
MIN_STEPS = 8
STEP_QUANTILE = 0.8
#: Smallest step scale: localisation jitter of a particle at rest (px, and x its radius).
MIN_SCALE_PX, MIN_SCALE_RADII = 2.0, 0.15
#: A young model (fewer than `MIN_STEPS` steps) has shown no reach yet: its scale is the option's (or the
#: lower median of the steps it has taken, if larger), and its gated jump needs stronger appearance: the
#: jump's cost counts (1 + this x youth) times (youth falls from 1 to 0 as its steps accumulate). A 48 px jump
#: of a 3-frame-old track onto a look-alike (robustness `dense`: 8 scales, 0.73 of its typical z) passed;
#: now it needs 1.06. (A scale shrunk to 0.2 of the radius refused it too, but also a 34 px hop of a disc of
#: radius 10 just after its prompt landed, which the same z must admit: tests/test_seeding_aside.py.)
YOUNG_COST_GAIN = 2.0
#: Exponent of the budget's growth with frames lost (0.5 diffusive, 1 ballistic).
BUDGET_EXPONENT = 0.75
#: Jumps (in step scales) up to this are ordinary; beyond `MAX_JUMP` they are refused outright.
PLAUSIBLE_JUMP = 3.0
MAX_JUMP = 20.0
#: Fraction of the typical z an ordinary re-acquisition needs, and its rise per unit of jump cost beyond plausible.
BASE_Z_FRACTION = 0.5
Z_FRACTION_PER_COST = 0.12
#: Contrast band (ratio to the learned contrast) at the base requirement; it narrows as the requirement rises.
BASE_CONTRAST_HIGH = 1.8
#: A gated match must lie on unclaimed pixels at least this much (exclusivity).
EXCLUSIVE_VISIBLE = 0.9
#: At or above this fraction of its contrast explained by the long-run background, a match is a static feature.
STATIC_FRACTION = 0.5


@dataclass
class StepModel:
    """A particle's own step lengths (px, accepted present-to-present steps) and their robust scale."""

    default_scale_px: float
    steps: deque[float] = field(default_factory=lambda: deque(maxlen=STEP_HISTORY))
    _added: int = 0
    _scale: float | None = None

    def add(self, step_px: float) -> None:
        self.steps.append(step_px)
        self._added += 1
        if self._added % 8 == 0:  # the quantile is recomputed every 8 steps, not per frame
            self._scale = None

    @property
    def youth(self) -> float:
        """1 for a model without steps, falling to 0 at `MIN_STEPS`: how much of its scale is still a prior."""
        return max(0.0, 1.0 - len(self.steps) / MIN_STEPS)

    def scale_px(self, radius_px: float) -> float:
        """The 80th percentile of its recent steps, floored (until it has `MIN_STEPS`: `YOUNG_COST_GAIN`)."""
        if len(self.steps) < MIN_STEPS:
            taken = sorted(self.steps)[(len(self.steps) - 1) // 2] if self.steps else 0.0
            return max(self.default_scale_px, taken)
        if self._scale is None:
            ordered = sorted(self.steps)  # 64 floats: cheaper than np.quantile's layers
            self._scale = ordered[min(int(STEP_QUANTILE * len(ordered)), len(ordered) - 1)]
        return max(self._scale, MIN_SCALE_PX, MIN_SCALE_RADII * radius_px)

    def budget_px(self, radius_px: float, frames_lost: int) -> float:
        """The step scale widened with the frames lost: how far the particle plausibly went meanwhile."""
        return self.scale_px(radius_px) * (1.0 + frames_lost) ** BUDGET_EXPONENT


class Requirement(NamedTuple):
    """What a gated match must show: z >= ``z_fraction`` x typical z, contrast ratio in [low, high]."""

    z_fraction: float
    contrast_low: float
    contrast_high: float


def requirement(jump: float, youth: float = 0.0) -> Requirement | None:
    """Appearance needed for a jump of ``jump`` step scales (None: refused, whatever it looks like).

    ``youth`` (`StepModel.youth`, 0 to 1) weighs the jump's cost up to 1 + `YOUNG_COST_GAIN` times.
    """
    if jump > MAX_JUMP:
        return None
    cost = math.log1p(jump * jump) - math.log1p(PLAUSIBLE_JUMP**2)
    z_fraction = BASE_Z_FRACTION + Z_FRACTION_PER_COST * max(cost, 0.0) * (1.0 + YOUNG_COST_GAIN * youth)
    return Requirement(z_fraction, min(z_fraction, 0.9), max(BASE_CONTRAST_HIGH - (z_fraction - BASE_Z_FRACTION), 1.2))


class Candidate(NamedTuple):
    """A match proposed for a particle: where, how strong (z, contrast), how much of it is seen.

    ``visible``: fraction of the whole mask in the frame and unclaimed; ``exclusive``: fraction of its
    in-frame pixels not claimed by another particle this frame.
    """

    x: float
    y: float
    z: float
    amplitude: float
    visible: float
    exclusive: float


class History(NamedTuple):
    """The particle's side: last accepted position, whether present in the previous frame, references.

    ``youth``: how young its step model is (`StepModel.youth`).
    """

    x: float
    y: float
    present: bool
    frames_lost: int
    z_ref: float
    amplitude_ref: float
    budget_px: float
    youth: float = 0.0


def jump_in_scales(candidate: Candidate, history: History) -> float:
    """Distance from the last accepted position, in the particle's step budget."""
    return math.hypot(candidate.x - history.x, candidate.y - history.y) / max(history.budget_px, 1e-9)


def needs_gate(candidate: Candidate, history: History) -> bool:
    """Re-acquisitions always; a present particle only for a jump beyond `PLAUSIBLE_JUMP` scales."""
    return not history.present or jump_in_scales(candidate, history) > PLAUSIBLE_JUMP


def refusal(candidate: Candidate, history: History) -> str | None:
    """Why the match may not carry the particle's id, on appearance, motion and exclusivity (None: it may).

    The static-feature test needs the frame and is the caller's (`STATIC_FRACTION`).
    """
    jump = jump_in_scales(candidate, history)
    need = requirement(jump, history.youth)
    if need is None:
        return f"jump of {jump:.0f} step scales"
    expected_z = history.z_ref * math.sqrt(max(candidate.visible, 0.0))
    if candidate.z < need.z_fraction * expected_z:
        return (f"z {candidate.z:.1f} < {need.z_fraction:.2f} x typical {expected_z:.1f} (visible part) "
                f"for a {jump:.1f}-scale jump")
    ratio = candidate.amplitude / max(history.amplitude_ref, 1e-9)
    if not need.contrast_low <= ratio <= need.contrast_high:
        return f"contrast {ratio:.2f} x learned, outside [{need.contrast_low:.2f}, {need.contrast_high:.2f}]"
    if candidate.exclusive < EXCLUSIVE_VISIBLE:
        return f"on another particle ({1 - candidate.exclusive:.0%} claimed)"
    return None
