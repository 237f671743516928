"""Contacts with unprompted look-alikes: who is who after two bodies touched; absent while that is unclear.

Robustness `distractors` (issue 16): an unprompted particle like a tracked one moves through the field.
While it touches the tracked particle, the particle's best match may be on it, or straddle both,
and appearance learned then teaches the memory the pair (a sphere over a rod for 16 frames raised
the rod's contrast reference 1.8x, and its memory then matched the sphere better than the rod). So
each present particle's accepted match is checked for a **rival**: the particle's own template
matched within reach with the match's pixels withheld, as strong as `RIVAL_Z_FRACTION` of its
typical z, mostly on unclaimed pixels, not on another tracked particle or a static feature, and
touching the match (`CONTACT_GAP_PX`). While a rival touches it (a **contact**):

- nothing is learned (appearance, contrast and z references): the memory stays the particle's;
- the two bodies are followed frame to frame (ours: the accepted match; theirs: the rival). When they
  overlap (closer than `MIX_RADII` of the particle's radius) or ours steps onto where theirs was, the
  two may have swapped: the contact is **mixed**;
- a mixed contact whose bodies are apart again is reported absent (lost beats wrong): which one is
  ours is decided only when they no longer touch, by how well each matches the appearance the
  particle had before the contact (`shape_agreement`, a margin of `DECIDE_MARGIN`); undecided, the
  particle stays absent and is decided again on every later frame it is searched.

A contact that never mixed ends as it began: the particle kept its body throughout.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.claims import unclaimed_area
from sam4em_live.segment.embedded.identity import STATIC_FRACTION
from sam4em_live.segment.embedded.search import MotionPrior
from sam4em_live.segment.embedded.window import frame_window

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.near import NearWindow
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.pose_search import SearchOutcome
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.search import PoseEstimate
    from sam4em_live.segment.embedded.static_map import StaticMap
    from sam4em_live.segment.embedded.tracker import TrackedParticle

logger = logging.getLogger(__name__)

#: Only a particle whose memory holds this many observations is watched (a young one's references still settle).
MATURE_OBSERVATIONS = 16
#: A rival's match z must be at least this fraction of the particle's typical z (noise alone: ~0.1).
RIVAL_Z_FRACTION = 0.35
#: ... and at least this fraction of its mask on pixels no particle claimed (its own match withheld).
RIVAL_VISIBLE = 0.6
#: The rival is searched this many of the particle's radii around its match.
RIVAL_REACH_RADII = 2.5
#: Two masks closer than this (px) touch.
CONTACT_GAP_PX = 3
#: Bodies closer than this many equivalent radii overlap: their identities may swap.
MIX_RADII = 0.75
#: A body is ours when its shape agreement beats the other's by this much.
DECIDE_MARGIN = 0.06
#: Shape agreement is read on the observation and the reference smoothed by this (px).
AGREEMENT_SMOOTHING_PX = 2.0
#: A match this many times the particle's contrast before the contact has a look-alike over it (gold on gold).
OVERLAP_CONTRAST = 1.35
#: ... and the contrast beyond the particle's own must stand this many noise sigmas (z units) out.
OVERLAP_EXCESS_Z = 8.0
#: ... and not on a place whose long-run mean already shows this share of the contrast (`static_map`): a static
#: feature under it (robustness `leave-field`: a rod over its static twin, 0.30; a moving look-alike: 0.00-0.01).
STATIC_SHARE = 0.2
#: ... and this many times, both bodies lie under it: where it is, is right for either.
FULL_OVERLAP_CONTRAST = 1.55
#: A rival found on the frame with ours taken out is placed again on the frame itself within this many radii.
REFINE_RADII = 0.5
#: A body is taken for the particle after a mixed contact only if it looks at least this much like it did before.
LIKENESS_MIN = 0.8
#: ... or, below that, at least `CLEAR_LIKENESS_MIN` while the other body is this much less like it: a body that is
#: no look-alike at all (foreign-noise's 1/f texture; held-out MoNet seed 3: a rod that grew back from a seed
#: 55 % too small, across a quadrant boundary, opened a contact on its contrast and then read 0.57-0.60 against
#: -0.36-0.14 for 64 frames). Look-alikes parting read within ~0.1 of each other.
CLEAR_LIKENESS_MARGIN = 0.8
CLEAR_LIKENESS_MIN = 0.5
#: After parting, the other body is looked for this many radii around where it last touched ours.
PARTED_REACH_RADII = 1.0
#: A mixed contact with no other body found for this many frames in a row (and ours looking like itself) is over.
QUIET_FRAMES = 3
#: Weight of a body's contrast mismatch (|ln ratio| to the contrast before the contact) against shape agreement.
CONTRAST_WEIGHT = 0.3


class Verdict(Enum):
    """What the caller does with an accepted match."""

    FOLLOW = "follow"  # accept it and learn as usual
    HOLD = "hold"  # accept it, learn nothing (a look-alike touches it)
    ABSENT = "absent"  # report the particle absent (which body is ours is unclear)
    SWITCH = "switch"  # the other body is ours: accept `Judgement.estimate` instead


@dataclass
class Judgement:
    """A `Verdict`, and for `Verdict.SWITCH` the other body's match and its window's background."""

    verdict: Verdict
    estimate: PoseEstimate | None = None
    background: float = 0.0


class Searcher(Protocol):
    """The part of `EmbeddedSegmenter` a contact needs."""

    options: EmbeddedOptions
    _static: StaticMap
    _tracks: dict[int, TrackedParticle]

    def _search_window(self, pixels: np.ndarray, track: TrackedParticle, claims: list[Placement],
                       coarse_prior: MotionPrior, fine_prior: MotionPrior, near: bool = False,
                       centre: tuple[float, float] | None = None, prepared: NearWindow | None = None
                       ) -> SearchOutcome: ...


@dataclass
class Contact:
    """One particle's contact with a look-alike: the appearance before it, both bodies' last places."""

    appearance: np.ndarray
    mask: np.ndarray
    ours: tuple[float, float]
    theirs: tuple[float, float]
    amplitude: float
    mixed: bool = False
    frames: int = 0
    quiet: int = 0  # frames in a row with no other body found since the contact mixed


def equivalent_radius(track: TrackedParticle) -> float:
    """The radius of a disc of the particle's mask area (px)."""
    return math.sqrt(max(track.memory.area_px, 1) / math.pi)


def shape_agreement(pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate, background: float,
                    appearance: np.ndarray, mask: np.ndarray) -> float:
    """Correlation of the observation at ``estimate`` (body frame) with ``appearance``, both smoothed, near ``mask``."""
    memory = track.memory
    half = memory.observe_reach_px(estimate.angle_deg)
    x0, y0 = int(round(estimate.x)) - half, int(round(estimate.y)) - half
    window = frame_window(pixels, x0, y0, 2 * half + 1, 2 * half + 1, track.polarity, None, background)
    observed = memory.observe(window.darkness, estimate.x - x0, estimate.y - y0, estimate.angle_deg)
    support = ndimage.binary_dilation(mask, iterations=3)
    a = ndimage.gaussian_filter(observed, AGREEMENT_SMOOTHING_PX)[support]
    b = ndimage.gaussian_filter(appearance, AGREEMENT_SMOOTHING_PX)[support]
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


class ContactBook:
    """The open contacts of a segmenter's particles (by id)."""

    def __init__(self) -> None:
        self._open: dict[int, Contact] = {}

    def forget(self, particle: int) -> None:
        self._open.pop(particle, None)

    def in_contact(self, particle: int) -> bool:
        return particle in self._open

    def _rival(self, seg: Searcher, pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate,
               background: float, placed: Placement, claims: list[Placement], around: tuple[float, float] | None = None,
               reach_radii: float = RIVAL_REACH_RADII) -> tuple[PoseEstimate, float, Placement] | None:
        """The strongest other match of the particle's template near ``around`` (default: the match).

        Searched on the frame with the particle's own fitted appearance taken out at its match
        (`explained_away`): a look-alike pressed against it, or partly under its mask, keeps its contrast.
        """
        cx, cy = around if around is not None else (estimate.x, estimate.y)
        reach = reach_radii * track.memory.radius_px
        prior = MotionPrior(cx, cy, track.angle_deg, reach, seg.options.step_prior_scale_px,
                            seg.options.turn_prior_sigma_deg, 0.0, 0.0)
        residual = explained_away(pixels, track, estimate, background)
        rival, rival_background = seg._search_window(residual, track, claims, prior, prior, centre=(cx, cy))
        if rival is not None:
            logger.debug("particle %d: rival search around (%.0f, %.0f): (%.0f, %.0f) z %.1f (typical %.1f)",
                         track.particle, cx, cy, rival.x, rival.y, rival.z, track.z_ref)
        if rival is None or rival.z < RIVAL_Z_FRACTION * track.z_ref:
            return None
        mix = MIX_RADII * equivalent_radius(track)
        if math.dist((rival.x, rival.y), (estimate.x, estimate.y)) < mix:
            # What is left of the particle itself (a misfit of its own appearance) is no other body.
            return None
        # Its pose on the frame itself: what was taken out with ours may have cut it (a look-alike partly under it).
        near = MotionPrior(rival.x, rival.y, rival.angle_deg, REFINE_RADII * equivalent_radius(track),
                           seg.options.step_prior_scale_px, seg.options.turn_prior_sigma_deg, 0.0, 0.0)
        refined, refined_background = seg._search_window(pixels, track, [*claims, placed], near, near,
                                                         centre=(rival.x, rival.y))
        if refined is not None and math.dist((refined.x, refined.y), (estimate.x, estimate.y)) >= mix:
            rival, rival_background = refined, refined_background
        at = track.memory.rasterize(rival.x, rival.y, rival.angle_deg, pixels.shape)
        if at is None or unclaimed_area(at, claims) < RIVAL_VISIBLE * max(int(at.crop.sum()), 1):
            return None
        radius = track.memory.radius_px
        for other in seg._tracks.values():
            if other is not track and other.present and math.hypot(other.x - rival.x, other.y - rival.y) < radius:
                return None  # a tracked particle (settled later this frame): the claims' business
        if seg._static.explains(pixels, rival.x, rival.y, radius, track.polarity) >= STATIC_FRACTION:
            return None
        return rival, rival_background, at

    def judge(self, seg: Searcher, pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate,
              background: float, placed: Placement, claims: list[Placement]) -> Judgement:
        """What to do with an accepted match of ``track`` (present or being re-acquired)."""
        contact = self._open.get(track.particle)
        if contact is None and (not track.present or track.memory.n_obs < MATURE_OBSERVATIONS):
            return Judgement(Verdict.FOLLOW)  # a re-acquisition out of no contact: the identity gate's
        reference = contact.amplitude if contact is not None else track.amplitude_ref
        contrast = estimate.amplitude / max(reference, 1e-9)
        # More contrast than the particle has, by a margin and well beyond the match's own noise (z / contrast:
        # a faint particle's fitted contrast wanders by tens of percent from frame to frame).
        overlapped = (contrast >= OVERLAP_CONTRAST
                      and estimate.z * (1.0 - 1.0 / contrast) >= OVERLAP_EXCESS_Z)
        if contact is None and (not overlapped or _beside_tracked(seg, track, estimate)
                                or (seg._static.near_feature(placed)
                                    and seg._static.explains_mask(pixels, placed, track.polarity) >= STATIC_SHARE)):
            # A contact opens when a look-alike comes over the particle; two tracked particles over each other
            # are the claims' business (each is settled with the other's pixels withheld), a static feature
            # under it `static_overlap`'s.
            return Judgement(Verdict.FOLLOW)
        ours = (estimate.x, estimate.y)
        if contact is not None and not track.present and math.dist(ours, contact.ours) > self._roam(track):
            return Judgement(Verdict.ABSENT)  # lost in a contact: only the bodies of the contact may be ours
        found = self._rival(seg, pixels, track, estimate, background, placed, claims)
        touching = found is not None and _touch(placed, found[2])
        if contact is None:
            if not touching and not overlapped:
                return Judgement(Verdict.FOLLOW)
            theirs = (found[0].x, found[0].y) if touching and found is not None else ours
            contact = self._open[track.particle] = Contact(track.memory.appearance.copy(), track.memory.mask.copy(),
                                                          (track.x, track.y), theirs, track.amplitude_ref)
            logger.debug("particle %d: contact with a look-alike at (%.0f, %.0f), contrast %.2f", track.particle,
                         theirs[0], theirs[1], contrast)
        contact.frames += 1
        mix = MIX_RADII * equivalent_radius(track)
        if overlapped:
            contact.mixed = True  # a look-alike over it: the two may come apart either way
        if touching and track.present:
            assert found is not None
            theirs = (found[0].x, found[0].y)
            if math.dist(ours, theirs) < mix or math.dist(ours, contact.theirs) < math.dist(ours, contact.ours):
                contact.mixed = True  # overlapping, or ours stepped onto where theirs was: they may have swapped
            contact.theirs = theirs
        if track.present:
            contact.ours = ours  # (a lost particle's best match may be anywhere in its window)
        if touching or overlapped:
            contact.quiet = 0
            if not contact.mixed:
                return Judgement(Verdict.FOLLOW)  # side by side: each keeps its own body (and learns as before)
            if contrast >= FULL_OVERLAP_CONTRAST or (touching and math.dist(ours, contact.theirs) < mix):
                return Judgement(Verdict.HOLD)  # one blob: where it is, is right for both
            return Judgement(Verdict.ABSENT)
        # Parted (or the other is gone).
        if not contact.mixed:
            self.forget(track.particle)
            return Judgement(Verdict.FOLLOW)
        # The other body: near where it was last seen touching ours.
        found = self._rival(seg, pixels, track, estimate, background, placed, claims, around=contact.theirs,
                            reach_radii=PARTED_REACH_RADII)
        mine = self._likeness(pixels, track, estimate, background, contact)
        if found is None:
            contact.quiet += 1
            if contact.quiet >= QUIET_FRAMES and mine >= LIKENESS_MIN:
                self.forget(track.particle)  # the other one is gone, and the one left looks like ours did
                return Judgement(Verdict.FOLLOW)
            return Judgement(Verdict.ABSENT)
        contact.quiet = 0
        rival, rival_background, _ = found
        other = self._likeness(pixels, track, rival, rival_background, contact)
        logger.debug("particle %d: parted after %d frames: likeness %.3f here, %.3f at (%.0f, %.0f)",
                     track.particle, contact.frames, mine, other, rival.x, rival.y)
        if ours_after_parting(mine, other):
            self.forget(track.particle)
            return Judgement(Verdict.FOLLOW)
        if other >= max(mine + DECIDE_MARGIN, LIKENESS_MIN):
            self.forget(track.particle)
            return Judgement(Verdict.SWITCH, rival, rival_background)
        return Judgement(Verdict.ABSENT)

    @staticmethod
    def _roam(track: TrackedParticle) -> float:
        """How far from the contact's last place a body of the contact may be, after the frames lost since."""
        return 2.0 * equivalent_radius(track) + track.steps.budget_px(track.memory.radius_px, track.frames_lost)

    @staticmethod
    def _likeness(pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate, background: float,
                  contact: Contact) -> float:
        """How much a body looks like the particle before the contact: shape agreement less contrast mismatch."""
        agreement = shape_agreement(pixels, track, estimate, background, contact.appearance, contact.mask)
        ratio = max(estimate.amplitude, 1e-9) / max(contact.amplitude, 1e-9)
        return agreement - CONTRAST_WEIGHT * abs(math.log(ratio))


def ours_after_parting(mine: float, other: float) -> bool:
    """Whether the body at our match is ours after a mixed contact, given both bodies' likeness (`_likeness`)."""
    return mine >= max(other + DECIDE_MARGIN, LIKENESS_MIN) or (
        mine >= CLEAR_LIKENESS_MIN and mine >= other + CLEAR_LIKENESS_MARGIN)


def explained_away(pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate, background: float
                   ) -> np.ndarray:
    """A float copy of ``pixels`` with the particle's appearance, fitted at ``estimate``, taken out.

    The memory's appearance is the particle's contrast d = polarity (1 - I / b) in its body frame; its
    amplitude is fitted to this frame's observation over the mask grown by 3 px, and I + polarity b a m
    is written back there.
    """
    memory = track.memory
    half = memory.observe_reach_px(estimate.angle_deg)
    x0, y0 = int(round(estimate.x)) - half, int(round(estimate.y)) - half
    window = frame_window(pixels, x0, y0, 2 * half + 1, 2 * half + 1, track.polarity, None, background)
    observed = memory.observe(window.darkness, estimate.x - x0, estimate.y - y0, estimate.angle_deg)
    support = ndimage.binary_dilation(memory.mask, iterations=3)
    model = np.where(support, memory.appearance, np.float32(0.0))
    energy = float((model * model).sum())
    amplitude = float((observed * model).sum()) / energy if energy > 0 else 0.0
    out = pixels.astype(np.float32, copy=True)
    rows, cols = pixels.shape
    ya, yb = max(y0, 0), min(y0 + 2 * half + 1, rows)
    xa, xb = max(x0, 0), min(x0 + 2 * half + 1, cols)
    if ya >= yb or xa >= xb or amplitude <= 0:
        return out
    t = math.radians(estimate.angle_deg)
    c, s = math.cos(t), math.sin(t)
    dy = np.arange(ya, yb, dtype=np.float32)[:, None] - np.float32(estimate.y)
    dx = np.arange(xa, xb, dtype=np.float32)[None, :] - np.float32(estimate.x)
    u = dx * np.float32(c) + dy * np.float32(s) + np.float32(memory.half)
    v = -dx * np.float32(s) + dy * np.float32(c) + np.float32(memory.half)
    placed = ndimage.map_coordinates(model, [v, u], order=1, mode="constant", cval=0.0)
    level = window.background if background is None else background
    out[ya:yb, xa:xb] += np.float32(track.polarity * level * amplitude) * placed.astype(np.float32)
    return out


def _beside_tracked(seg: Searcher, track: TrackedParticle, estimate: PoseEstimate) -> bool:
    """Whether another tracked particle was last within two radii of ``estimate`` (it may be what lies over it)."""
    reach = 2.0 * track.memory.radius_px
    return any(other is not track and math.hypot(other.x - estimate.x, other.y - estimate.y) < reach
               for other in seg._tracks.values())


def _touch(a: Placement, b: Placement) -> bool:
    """Whether two placed masks come within `CONTACT_GAP_PX` of each other."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    g = CONTACT_GAP_PX
    x0, y0 = max(ax0, bx0 - g), max(ay0, by0 - g)
    x1, y1 = min(ax1, bx1 + g), min(ay1, by1 + g)
    if x0 >= x1 or y0 >= y1:
        return False
    grown = np.zeros((by1 - by0 + 2 * g, bx1 - bx0 + 2 * g), dtype=bool)
    grown[g:-g, g:-g] = b.crop
    grown = ndimage.binary_dilation(grown, iterations=g)
    mine = a.crop[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
    theirs = grown[y0 - (by0 - g) : y1 - (by0 - g), x0 - (bx0 - g) : x1 - (bx0 - g)]
    return bool((mine & theirs).any())
