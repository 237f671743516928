"""Prompts of the embedded backend: seeded (on the frame loop or beside it), landed, started or corrected.

A mixin of `segmenter.EmbeddedSegmenter` (its pose search, emission and tracks are the segmenter's): a
prompt's seed (`seed`) becomes a new particle calibrated on its prompt frame (`_fresh_track`); a prompt seeded
beside the frame loop lands some frames later and is first brought up to that frame (`_bring_up`); a prompt
for a particle already tracked is a correction that keeps the learned shape when it fits (`_keep_memory`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sam4em_live.particles import ParticleEdit, Prompt, PromptError, validate_edit
from sam4em_live.segment.base import RejectedEdit, SeededEdits, prompt_key
from sam4em_live.segment.embedded.claims import paste
from sam4em_live.segment.embedded.prompt_split import batch_body_px, cut_to_prompt
from sam4em_live.segment.embedded.search import MotionPrior
from sam4em_live.segment.embedded.seed import (
    Seed,
    body_from_seed,
    prepared_frame,
    seed_particle,
    seed_prompts,
)
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.segment.embedded.tracker import TrackedParticle

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.frames import Frame
    from sam4em_live.particles import ParticleMask
    from sam4em_live.segment.embedded.background import FlatField
    from sam4em_live.segment.embedded.near import NearWindow
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.search import PoseEstimate
    from sam4em_live.segment.embedded.static_map import StaticMap

logger = logging.getLogger(__name__)

#: A kept memory, placed at the prompt, must overlap the prompt's own segmentation at least this much (IoU).
CORRECTION_KEEP_IOU = 0.5


class PreparedPrompt(NamedTuple):
    """A prompt seeded beside the frame loop (`PromptLanding.seed`): its seed and its new, calibrated track."""

    seed: Seed
    track: TrackedParticle


class PromptLanding:
    """The prompt half of `segmenter.EmbeddedSegmenter` (see the module docstring)."""

    options: EmbeddedOptions
    _tracks: dict[int, TrackedParticle]
    _background: FlatField
    _static: StaticMap
    #: The typical seed area of the last batch of prompts (`prompt_split.batch_body_px`; None: it cannot tell).
    _batch_body_px: float | None = None

    if TYPE_CHECKING:  # the segmenter's own (its pose search and emission)
        def _search(self, pixels: np.ndarray, track: TrackedParticle, claims: list[Placement],
                    radius_px: float | None = None, centre: tuple[float, float] | None = None,
                    prepared: NearWindow | None = None) -> tuple[PoseEstimate | None, float]: ...

        def _search_window(self, pixels: np.ndarray, track: TrackedParticle, claims: list[Placement],
                           coarse_prior: MotionPrior, fine_prior: MotionPrior, near: bool = False,
                           centre: tuple[float, float] | None = None, prepared: NearWindow | None = None
                           ) -> tuple[PoseEstimate | None, float]: ...

        def _emit(self, pixels: np.ndarray, track: TrackedParticle, score: float, claims: list[Placement],
                  placed: Placement | None = None) -> ParticleMask: ...

    def _seed_all(self, pixels: np.ndarray, edits: Sequence[ParticleEdit]) -> dict[int, Seed]:
        """Seed every prompt of this frame first: bad prompts raise `PromptErrors` (each naming its particle)."""
        seeds = seed_prompts(pixels, edits, self.options)
        self._batch_body_px = batch_body_px(seeds.values())
        return seeds

    def seed(self, frame: Frame, edits: Sequence[ParticleEdit]) -> SeededEdits:
        """Seed ``edits``' prompts on ``frame`` beside the frame loop (`SeedsAside`; live mode).

        Reads only the frame and the options (safe on a helper thread while `track` runs): each prompt's
        seed and its new particle, calibrated on this frame, as `_apply_prompt` makes them. A prompt that
        cannot be seeded is returned in ``rejected`` with its reason.
        """
        pixels = self._background.peek(frame.pixels, edits)
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        kept: list[ParticleEdit] = []
        rejected: list[RejectedEdit] = []
        prepared: dict[tuple[object, ...], object] = {}
        shared = prepared_frame(pixels, [edit for edit in edits if isinstance(edit, Prompt)], self.options)
        seeds: dict[int, Seed] = {}
        for edit in edits:
            try:
                validate_edit(edit, shape)
                if isinstance(edit, Prompt):
                    seeds[id(edit)] = seed_particle(pixels, edit, self.options, shared)
            except PromptError as exc:
                rejected.append(RejectedEdit(edit, str(exc)))
                continue
            kept.append(edit)
        # Split and trimmed once the whole batch is seeded: its typical seed stands for a body (`prompt_split`).
        body_px = batch_body_px(seeds.values())
        for edit in [e for e in kept if isinstance(e, Prompt)]:
            try:
                seed = cut_to_prompt(seeds[id(edit)], edit, self.options.mask_smoothing_px, body_px)
                prepared[prompt_edit_key(edit)] = PreparedPrompt(seed, self._fresh_track(pixels, edit, seed))
            except PromptError as exc:
                rejected.append(RejectedEdit(edit, str(exc)))
                kept.remove(edit)
        return SeededEdits(frame.index, tuple(kept), tuple(rejected), prepared)

    def _land_prompt(self, pixels: np.ndarray, prompt: Prompt, ready: PreparedPrompt, elapsed: int,
                     claims: list[Placement]) -> ParticleMask:
        """A prompt seeded ``elapsed`` frames before this one: brought up to this frame, then started."""
        if elapsed > 0:
            self._bring_up(pixels, ready.track, elapsed, claims)
        return self._start(pixels, prompt, ready.seed, ready.track, claims)

    def _bring_up(self, pixels: np.ndarray, track: TrackedParticle, elapsed: int, claims: list[Placement]) -> None:
        """Move a new particle from its seed to where it is ``elapsed`` frames later (kept at the seed if not found).

        A search within half its radius of the seed; where that finds nothing, one full-radius search around
        the seed, its step and turn priors widened by sqrt(elapsed) (a random walk's spread); no velocity or
        step is learned from it (it spans several frames).
        """
        prior = track.prior(self.options)
        # First within half its radius of the seed: a particle still there is kept there. Only if it is not
        # is the search widened; widened at once, the young template (one frame's seed) often matched a
        # neighbour of a crowded field better than itself (two swapped ids, tests/test_prompt_rejection_e2e.py).
        estimate, _ = self._search(pixels, track, claims, radius_px=_anchor_radius(track, 0.5 * track.memory.radius_px))
        if estimate is None or not track.is_detection(estimate, 1.0, self.options):
            spread = math.sqrt(elapsed)
            widened = MotionPrior(prior.x, prior.y, prior.angle_deg, prior.radius_px, prior.step_scale_px * spread,
                                  prior.turn_sigma_deg * spread, prior.step_weight, prior.turn_weight)
            estimate, _ = self._search_window(pixels, track, claims, widened, widened)
        if estimate is not None and track.is_detection(estimate, 1.0, self.options):
            track.x, track.y, track.angle_deg, track.last_z = estimate.x, estimate.y, estimate.angle_deg, estimate.z

    def _apply_prompt(self, pixels: np.ndarray, prompt: Prompt, seed: Seed, claims: list[Placement]) -> ParticleMask:
        """Start a particle, or correct one (re-anchor it, keeping its learned shape when that fits the prompt).

        A seed that holds several particles is first cut down to the one the prompt is on (`prompt_split`).
        """
        seed = cut_to_prompt(seed, prompt, self.options.mask_smoothing_px, self._batch_body_px)
        return self._start(pixels, prompt, seed, self._fresh_track(pixels, prompt, seed), claims)

    def _fresh_track(self, pixels: np.ndarray, prompt: Prompt, seed: Seed) -> TrackedParticle:
        """The particle a seed starts, calibrated on its prompt frame (reads no tracking state)."""
        appearance, mask = body_from_seed(seed)
        fresh = TrackedParticle(prompt.particle, ShapeMemory(appearance, mask, self.options), seed.polarity,
                                seed.x, seed.y, seed.angle_deg, amplitude_ref=seed.contrast,
                                z_ref=2 * self.options.min_detection_z)
        fresh.memory.anchor = point_in_body(prompt, seed)
        self._calibrate(pixels, fresh)
        return fresh

    def _start(self, pixels: np.ndarray, prompt: Prompt, seed: Seed, fresh: TrackedParticle,
               claims: list[Placement]) -> ParticleMask:
        """Track ``fresh``, or keep the existing particle's learned shape when it fits the prompt (a correction)."""
        existing = self._tracks.get(prompt.particle)
        if existing is not None and self._keep_memory(pixels, existing, seed):
            logger.debug("particle %d: correction re-anchored, learned shape kept", prompt.particle)
            track = existing
        else:
            track = self._tracks[prompt.particle] = fresh
        self._static.forget(seed.x, seed.y, seed.radius_px)
        return self._emit(pixels, track, 1.0, claims)

    def _calibrate(self, pixels: np.ndarray, track: TrackedParticle) -> None:
        """Take the contrast and z references from matching the new template on its own prompt frame."""
        estimate, _ = self._search(pixels, track, [], radius_px=_anchor_radius(track, 0.0))
        if estimate is not None and estimate.amplitude > 0:
            track.amplitude_ref, track.z_ref, track.last_z = estimate.amplitude, estimate.z, estimate.z

    def _keep_memory(self, pixels: np.ndarray, track: TrackedParticle, seed: Seed) -> bool:
        """Whether ``track`` keeps its learned shape through a correction at ``seed``.

        It does when that shape, matched at the prompt, overlaps the prompt's own segmentation
        (IoU >= CORRECTION_KEEP_IOU): a correction usually shows where the same particle is, and averaged
        memory beats a one-frame segmentation. Otherwise the shape is re-learned from the prompt.
        """
        estimate, _ = self._search(pixels, replace_position(track, seed), [],
                                   radius_px=_anchor_radius(track, 0.5 * seed.radius_px))
        if estimate is None:
            return False
        placed = track.memory.rasterize(estimate.x, estimate.y, estimate.angle_deg, pixels.shape)
        if placed is None:
            return False
        (x0, y0, x1, y1), crop = placed.box, placed.crop
        seed_full = np.zeros(pixels.shape, dtype=bool)
        paste(seed_full, seed.window.x0, seed.window.y0, seed.mask)
        inter = int((seed_full[y0:y1, x0:x1] & crop).sum())
        union = int(seed.mask.sum()) + int(crop.sum()) - inter
        if inter / max(union, 1) < CORRECTION_KEEP_IOU:
            return False
        track.present, track.velocity = True, (0.0, 0.0)
        track.accept(estimate)
        return True


def prompt_edit_key(edit: ParticleEdit) -> tuple[object, ...]:
    """A prompt's key among the prepared ones (`SeededEdits.prepared`); other edits have none."""
    return prompt_key(edit) if isinstance(edit, Prompt) else ()


def point_in_body(prompt: Prompt, seed: Seed) -> tuple[float, float] | None:
    """The prompt's first positive point in the seed's body frame (u along its angle, v across; px); None if none."""
    point = next((p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 1), None)
    if point is None:
        return None
    dx, dy = point[0] - seed.x, point[1] - seed.y
    t = math.radians(seed.angle_deg)
    return dx * math.cos(t) + dy * math.sin(t), dy * math.cos(t) - dx * math.sin(t)


def _anchor_radius(track: TrackedParticle, wanted_px: float) -> float:
    """Search radius around a prompt: at least one coarse cell, so the coarse grid has a candidate."""
    return max(4.0, 1.5 * track.memory.coarse_factor, wanted_px)


def replace_position(track: TrackedParticle, seed: Seed) -> TrackedParticle:
    """``track`` moved to the seed's position (searched from there, motion forgotten)."""
    track.x, track.y, track.velocity = seed.x, seed.y, (0.0, 0.0)
    return track
