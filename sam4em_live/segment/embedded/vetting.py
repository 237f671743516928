"""Whether one match may carry a particle's id this frame: the identity gate applied to a pose search's answer.

`identity.refusal` judges a candidate on motion, appearance and exclusivity; this module adds what needs
the frame and the static map, and decides *which* matches are judged at all:

- a **re-acquisition** (the particle was lost) and a **large jump** (beyond `identity.PLAUSIBLE_JUMP`
  step scales) always;
- a match **cut by the frame's edge** (less than `EDGE_CUT_VISIBLE` of its mask inside the frame), even
  after an ordinary step: a particle leaving the field slides, one ordinary step at a time, onto whatever
  dark feature the edge cuts at its exit point, and the masked match normalises by the visible part, so
  a static blob cut by the edge looks like the particle's visible part with a score of about 1
  (robustness `leave-field`: 95 of 95 absent frames reported on the blob). Such a match must not be on a
  static feature;
- an ordinary step longer than the particle's typical one (`STATIC_CHECK_STEP` step scales: ~1 frame in
  5) must not land on a static feature either: a heavy-tailed hopper re-entering the field took a static
  look-alike 25 px away in one "ordinary" step;
- a lost particle's candidate must not be a newcomer that came in through the frame's edge away from where
  the particle was lost (`edge_entries`).

The per-frame path stays cheap: a short interior step of a present particle is not judged.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from sam4em_live.segment.embedded.identity import PLAUSIBLE_JUMP, STATIC_FRACTION, Candidate, refusal

if TYPE_CHECKING:
    import numpy as np

    from sam4em_live.segment.embedded.edge_entries import EdgeEntries
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.search import PoseEstimate
    from sam4em_live.segment.embedded.static_map import StaticMap
    from sam4em_live.segment.embedded.tracker import TrackedParticle

logger = logging.getLogger(__name__)

#: The identity gate's refusal of a match on a static feature.
ON_STATIC = "on a static feature"
#: A match with less than this fraction of its mask inside the frame is checked against the static map.
EDGE_CUT_VISIBLE = 0.9
#: An ordinary step longer than this many of the particle's step scales is checked against the static map.
STATIC_CHECK_STEP = 1.0


def in_frame_fraction(placed: Placement) -> float:
    """Fraction of a placed mask's whole area that lies inside the frame."""
    return int(placed.crop.sum()) / max(placed.area_px, 1)


def step_in_scales(track: TrackedParticle, x: float, y: float) -> float:
    """A present particle's step to (x, y) in its own step scale (`identity.StepModel`); inf for a lost one."""
    if not track.present:
        return math.inf
    return math.hypot(x - track.x, y - track.y) / track.steps.budget_px(track.memory.radius_px, 0)


def is_large_jump(track: TrackedParticle, x: float, y: float) -> bool:
    """Whether (x, y) is beyond an ordinary step of a present particle (`identity.PLAUSIBLE_JUMP` scales)."""
    return step_in_scales(track, x, y) > PLAUSIBLE_JUMP


def vetted_jump(track: TrackedParticle, x: float, y: float) -> bool:
    """Whether a match at (x, y) is a large jump (`is_large_jump`) that the caller vets first.

    Before a present particle jumps, the caller looks for it where it was (`ordinary_reach_px`, the jump's
    pixels withheld) and keeps it there if it is still detected: a particle that dims, or steps where its
    near search finds no clear answer, is not handed to a look-alike further away. A look-alike passes any
    appearance test, and the step prior (a few z) does not outweigh a z difference of a few units: a
    3-frame-old track jumped 45 px onto one while its particle dimmed, and mature tracks (robustness
    `distractors`, held-out seeds 2-4) jumped 28-44 px onto unprompted look-alikes while their particles
    were still in reach. A lost particle's re-acquisition is vetted only while its step model is young (vetting every one delayed a rod fading
    back in by 2 frames in `fade-edge-artifact`: the gate and `edge_entries` judge re-acquisitions).
    """
    return (track.present or track.steps.youth > 0) and is_large_jump(track, x, y)


def ordinary_reach_px(track: TrackedParticle) -> float:
    """How far an ordinary step of a present particle goes (`identity.PLAUSIBLE_JUMP` of its step scales)."""
    return PLAUSIBLE_JUMP * track.steps.budget_px(track.memory.radius_px, 0)


def match_refusal(static: StaticMap, pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate,
                  placed: Placement, visible: float, entries: EdgeEntries | None = None, frame: int = 0
                  ) -> str | None:
    """Why a detection may not carry the particle's id (None: it may; see the module docstring).

    ``entries``: the newcomers seen so far (`edge_entries.EdgeEntries`, updated here); ``frame``: the frame count.
    """
    in_frame = in_frame_fraction(placed)
    step = step_in_scales(track, estimate.x, estimate.y)
    if step <= STATIC_CHECK_STEP and in_frame >= EDGE_CUT_VISIBLE and not static.near_feature(placed):
        return None  # a short step in the open: the per-frame path
    reason = None
    if step > PLAUSIBLE_JUMP:
        exclusive = visible / in_frame if in_frame > 0 else 0.0
        candidate = Candidate(estimate.x, estimate.y, estimate.z, estimate.amplitude, visible, exclusive)
        reason = refusal(candidate, track.history())
    if reason is None and static.explains_mask(pixels, placed, track.polarity) >= STATIC_FRACTION:
        reason = ON_STATIC
    if reason is None and entries is not None and not track.present:
        reason = entries.refusal(track, estimate.x, estimate.y, in_frame, EDGE_CUT_VISIBLE, pixels.shape, frame)
    if reason is not None:
        logger.debug("particle %d: match at (%.0f, %.0f) refused: %s", track.particle, estimate.x, estimate.y,
                     reason)
    return reason
