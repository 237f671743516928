"""``embedded``: prompt-seeded, template-matching particle tracker (CPU, no trained weights).

Per frame: edits first (all prompts are seeded before any state changes, so a
bad prompt raises `PromptError` and changes nothing). Then, for each particle,
predict its position, take a window of the frame around the prediction and find
the best translation x rotation of its learned template (coarse-to-fine matched
filtering, see `search`). Particles are settled best match first; one whose
best pose lands on a particle already settled is searched again with those
pixels withheld, so two particles passing close do not collapse onto one.
Presence is decided, the template mask is rasterised at the pose, and the
aligned window is folded into the particle's appearance memory (`shape`). Lost
particles are looked for around their last position every frame and, every
``reacquire_interval_frames``, one of them over the whole frame at low
resolution (`reacquire`). A re-acquisition or a large jump must pass the identity
gate (`identity`: own motion, own appearance, exclusivity, not on a static feature of
`static_map`, which learns from every frame); lost beats wrong.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.particles import ParticleEdit, ParticleMask, RemoveParticle
from sam4em_live.segment.embedded.background import FlatField
from sam4em_live.segment.embedded.batched_raster import placements
from sam4em_live.segment.embedded.batched_search import batched_near_searches
from sam4em_live.segment.embedded.claims import claimed, conflicts, unclaimed_area
from sam4em_live.segment.embedded.contact import ContactBook, Verdict
from sam4em_live.segment.embedded.edge_entries import EdgeEntries, exit_refusal
from sam4em_live.segment.embedded.exposure import Exposure
from sam4em_live.segment.embedded.identity import STATIC_FRACTION
from sam4em_live.segment.embedded.learning_schedule import filling_refreshes_due, learning_due
from sam4em_live.segment.embedded.near import NearWindow, near_windows
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.pose_search import PoseSearches, SearchOutcome
from sam4em_live.segment.embedded.prompt_landing import PreparedPrompt, PromptLanding, prompt_edit_key
from sam4em_live.segment.embedded.reacquire import candidate_positions
from sam4em_live.segment.embedded.static_map import StaticMap
from sam4em_live.segment.embedded.static_overlap import static_divided_window
from sam4em_live.segment.embedded.upkeep import FrameUpkeep
from sam4em_live.segment.embedded.vetting import ON_STATIC, match_refusal, ordinary_reach_px, vetted_jump
from sam4em_live.segment.embedded.window import frame_window

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.frames import Frame
    from sam4em_live.segment.base import SeededEdits
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.search import PoseEstimate
    from sam4em_live.segment.embedded.tracker import TrackedParticle

logger = logging.getLogger(__name__)

#: Skip appearance learning unless the match is at least this fraction of the particle's typical z.
LEARN_MIN_Z_FRACTION = 0.6
#: Appearance is learned only from fully visible, unclaimed particles.
LEARN_MIN_VISIBLE = 0.98
#: Candidates verified per lost particle in a full-frame re-acquisition pass.
REACQUIRE_CANDIDATES = 4
#: Blob candidates looked at per lost particle in a full-frame pass; static ones are dropped before verifying.
REACQUIRE_BLOBS = 12
#: A particle reported absent scores below this (the documented threshold `CONFIDENT_SCORE` is 0.5).
ABSENT_SCORE_CAP = 0.45
#: The static map is updated this many frames off the background map's phase: both on one frame (every
#: 16th) made one of the costliest frames (issue 23: p99 latency follows such synchronised work).
STATIC_MAP_PHASE_FRAMES = 2


class EmbeddedSegmenter(PoseSearches, PromptLanding):
    """The default CPU backend; see docs/embedded_backend.md (prompts: `prompt_landing.PromptLanding`)."""

    def __init__(self, options: EmbeddedOptions | None = None) -> None:
        self.options = options or EmbeddedOptions()
        self._tracks: dict[int, TrackedParticle] = {}
        self._frames_seen = 0
        self._reacquire_turn = 0
        self._static = StaticMap()  # what never moves: no re-acquisition there (`identity`)
        self._entries = EdgeEntries()  # newcomers through the frame's edge: not a lost particle (`edge_entries`)
        self._exposure = Exposure()  # a blanked beam: every particle absent
        self._contacts = ContactBook()  # particles a look-alike came over (`contact`)
        # The stream's fixed background, divided out before seeding and matching (`background`).
        self._background = FlatField(self.options.background_model, self.options.background_update_interval_frames)
        self._behind = False  # set by note_backlog (live mode only)
        self._lost_turn = 0  # which lost particle is searched while behind (round robin)
        # `learning_schedule.filling_refreshes_due`: the particles whose filling memories may refresh on this frame.
        self._filling_refresh_turns: frozenset[int] = frozenset()
        # Work of a frame that its masks do not wait for, run after they went out (`upkeep`; issue 23).
        self._upkeep = FrameUpkeep()
        self._learning_later = False  # whether `_conclude` queues a learn (never while prompts land)
        self._deferring = False  # set by the first `upkeep` call: its caller keeps each frame's pixels until then

    def describe(self) -> dict[str, Any]:
        return {"backend": "embedded", "random_weights": False, "model": "prompt-seeded template matching",
                "options": self.options.model_dump()}

    def particles(self) -> list[int]:
        return sorted(self._tracks)

    def close(self) -> None:
        self._upkeep.clear()
        self._tracks.clear()

    def upkeep(self) -> None:
        """The last frame's queued work (`DefersUpkeep`; `upkeep`); from now on `track` leaves it queued."""
        self._deferring = True
        self._upkeep.run()

    # ------------------------------------------------------------------ frame loop

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = (), seeded: SeededEdits | None = None
              ) -> list[ParticleMask]:
        self._upkeep.run()  # the last frame's, unless the pipeline has run it: this frame starts from its state
        self._learning_later = False  # (a frame that raised may have left it set)
        pixels = self._background.flatten(frame.pixels, edits)
        if pixels.ndim != 2:
            raise ValueError(f"embedded backend needs a 2-D frame, got shape {pixels.shape}")
        results: dict[int, ParticleMask] = {}
        claims: list[Placement] = []
        prepared = seeded.prepared if seeded is not None else {}
        # Raises before any state changes; prompts seeded aside (`seed`) are not seeded again.
        seeds = self._seed_all(pixels, [e for e in edits if not prepared or prompt_edit_key(e) not in prepared])
        with self._static.batched_forgets():  # each prompt unlearns its place; the map's features found once
            for edit in edits:
                self._contacts.forget(edit.particle)
                if isinstance(edit, RemoveParticle):
                    self._tracks.pop(edit.particle, None)
                    results.pop(edit.particle, None)
                elif seeded is not None and prompt_edit_key(edit) in prepared:
                    ready = prepared[prompt_edit_key(edit)]
                    assert isinstance(ready, PreparedPrompt)
                    results[edit.particle] = self._land_prompt(pixels, edit, ready,
                                                               frame.index - seeded.frame_index, claims)
                else:
                    results[edit.particle] = self._apply_prompt(pixels, edit, seeds[id(edit)], claims)
        if self._exposure.blanked(pixels):
            # A blanked beam shows nothing: the particles are reported absent, their state is kept.
            self._frames_seen += 1
            return [results.get(pid) or ParticleMask.absent(pid) for pid in sorted(self._tracks)]
        pending = [t for t in self._tracks.values() if t.particle not in results]
        self._filling_refresh_turns = self._filling_refreshes_due()
        # Lost before this frame: a particle lost in the joint pass (a refused jump) is not searched again
        # as a re-acquisition in the same frame (its budget, widened for a lost frame, let the refused jump in).
        lost = [t for t in pending if not t.present]
        self._learning_later = self._deferring  # each particle is concluded once from here on: learning can wait
        self._follow_jointly(pixels, [t for t in pending if t.present], claims, results)
        for track in self._lost_to_search(lost):
            results[track.particle] = self._follow(pixels, track, claims, strict=True)
        for track in lost:  # not searched this frame (live and behind): absent, one more frame lost
            if track.particle not in results:
                track.lose()
                results[track.particle] = ParticleMask.absent(track.particle)
        still_lost = sorted((t for t in lost if not t.present), key=lambda t: t.particle)
        if still_lost and self._frames_seen % self.options.reacquire_interval_frames == 0:
            # One lost particle per pass, in turn, so a pass costs one low-resolution frame scan.
            track = still_lost[self._reacquire_turn % len(still_lost)]
            self._reacquire_turn += 1
            found = self._reacquire(pixels, track, claims)
            if found is not None:
                results[track.particle] = found
        self._learning_later = False
        lost_places = [(t.x, t.y, t.memory.radius_px) for t in self._tracks.values() if not t.present]
        # Their next use is the next frame's: after this frame's masks have gone out (`upkeep`).
        self._upkeep.defer(partial(self._static.observe, self._frames_seen + STATIC_MAP_PHASE_FRAMES, pixels,
                                   claims, lost_places))
        self._upkeep.defer(partial(self._background.observe, self._frames_seen, frame.pixels, claims, lost_places))
        if not self._deferring:  # a caller that never asked may reuse the frame's buffer (a child process does)
            self._upkeep.run()
        self._frames_seen += 1
        return [results[pid] for pid in sorted(self._tracks) if pid in results]

    # ------------------------------------------------------------------ following

    def _follow_jointly(self, pixels: np.ndarray, tracks: list[TrackedParticle], claims: list[Placement],
                        results: dict[int, ParticleMask]) -> None:
        """Search every particle independently, then settle them best match first.

        A particle whose independent best pose lands on one already settled
        this frame (mask IoU >= `claims.CONFLICT_IOU`: two tracks on one particle) is
        searched again with those pixels withheld.
        """
        near = self._near_windows(pixels, tracks, claims)
        batch = batched_near_searches(pixels, tracks, claims, near, self.options)  # issue 23: all at once
        found: dict[int, SearchOutcome] = {}
        for t in tracks:
            if t.particle in batch.settled:
                found[t.particle] = SearchOutcome(*batch.settled[t.particle])
            elif t.particle in batch.wider:  # searched near without a clear answer: the full radius
                prior = batch.wider[t.particle]
                found[t.particle] = self._search_window(pixels, t, claims, prior, prior)
            else:
                found[t.particle] = self._search(pixels, t, claims, prepared=near.get(t.particle))

        def best_first(track: TrackedParticle) -> float:
            estimate = found[track.particle].estimate
            return -(estimate.z if estimate else -np.inf)

        order = sorted(tracks, key=best_first)
        # Every mask at its pose in one stacked pass (issue 23; the same as `ShapeMemory.rasterize` one by one).
        placed_at = placements([t.memory for t in order], [found[t.particle].estimate for t in order], pixels.shape)
        for track, at in zip(order, placed_at, strict=True):
            estimate, background = found[track.particle]
            placed = None
            if estimate is not None:
                placed = at
                if placed is not None and claims and conflicts(placed, claims):
                    estimate, background = self._search(pixels, track, claims)
                    placed = None
            results[track.particle] = self._conclude(pixels, track, estimate, background, claims, strict=False,
                                                     placed=placed)

    def _near_windows(self, pixels: np.ndarray, tracks: list[TrackedParticle], claims: list[Placement]
                      ) -> dict[int, NearWindow]:
        """`near.near_windows` (a method, so a test can compare it with one search at a time)."""
        return near_windows(pixels, tracks, claims, self.options)

    def _follow(self, pixels: np.ndarray, track: TrackedParticle, claims: list[Placement],
                strict: bool = False) -> ParticleMask:
        estimate, background = self._search(pixels, track, claims)
        return self._conclude(pixels, track, estimate, background, claims, strict)

    def _conclude(self, pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate | None,
                  background: float, claims: list[Placement], strict: bool,
                  placed: Placement | None = None, static_at: tuple[float, float] | None = None,
                  beside_static: bool = True) -> ParticleMask:
        if estimate is None:
            track.lose()
            return ParticleMask.absent(track.particle)
        if placed is None:
            placed = track.memory.rasterize(estimate.x, estimate.y, estimate.angle_deg, pixels.shape)
        if beside_static and static_at is None and placed is not None and self._static.near_feature(placed):
            # A static feature in reach pulls the match onto itself: searched again with it divided out
            # (`static_overlap`; leave-field: a rod over its static twin, masks 8-13 px off for 15 frames).
            patched = static_divided_window(self._static, pixels, track, self.options, claims)
            if patched is not None:
                estimate, background = self._search(patched, track, claims)
                return self._conclude(patched, track, estimate, background, claims, strict, beside_static=False)
        visible = 0.0 if placed is None else unclaimed_area(placed, claims) / max(placed.area_px, 1)
        refused = None
        if placed is not None and track.is_detection(estimate, visible, self.options, strict):
            if static_at is None and vetted_jump(track, estimate.x, estimate.y):
                # Before a large jump: is it still where it was, dimmed or beside a look-alike (`vetting.vetted_jump`)?
                near, near_background = self._search(pixels, track, [*claims, placed], radius_px=ordinary_reach_px(track))
                if (near is not None and track.is_detection(near, 1.0, self.options, strict)
                        and self._may_stay(pixels, track, near, claims)):
                    return self._conclude(pixels, track, near, near_background, claims, strict,
                                          static_at=(estimate.x, estimate.y))
            refused = self._refused(pixels, track, estimate, placed, visible)
            if refused is None and static_at is not None and (math.hypot(estimate.x - static_at[0], estimate.y
                                                                         - static_at[1]) < track.memory.radius_px):
                refused = ON_STATIC  # the retry found the same feature again (e.g. its part outside the frame)
            if refused == ON_STATIC and static_at is None:
                # The static feature outshone the particle: search once more with its pixels read as background.
                at = (estimate.x, estimate.y)
                estimate, background = self._search(pixels, track, [*claims, placed])
                return self._conclude(pixels, track, estimate, background, claims, strict, static_at=at)
        if placed is None or refused is not None or not track.is_detection(estimate, visible, self.options, strict):
            track.lose()  # lost beats wrong: reported absent, with a score below the confident threshold
            return ParticleMask.absent(track.particle,
                                       min(track.confidence(estimate, visible, self.options), ABSENT_SCORE_CAP))
        judged = self._contacts.judge(self, pixels, track, estimate, background, placed, claims)
        if judged.verdict is Verdict.SWITCH and judged.estimate is not None:  # the other body is ours
            estimate, background = judged.estimate, judged.background
            placed = track.memory.rasterize(estimate.x, estimate.y, estimate.angle_deg, pixels.shape)
            visible = 0.0 if placed is None else unclaimed_area(placed, claims) / max(placed.area_px, 1)
        if judged.verdict is Verdict.ABSENT or placed is None:
            track.lose()  # which body is ours is unclear (`contact`): absent, searched again next frame
            return ParticleMask.absent(track.particle,
                                       min(track.confidence(estimate, visible, self.options), ABSENT_SCORE_CAP))
        track.accept(estimate)
        if (judged.verdict is Verdict.FOLLOW and visible >= LEARN_MIN_VISIBLE
                and estimate.z >= LEARN_MIN_Z_FRACTION * track.z_ref):
            track.learn_references(estimate)
            if self._learning_due(track):
                self._learn_now_or_later(pixels, track, background, claims)
        return self._emit(pixels, track, track.confidence(estimate, visible, self.options), claims, placed)

    def _learning_due(self, track: TrackedParticle) -> bool:
        """Whether ``track`` learns its appearance on this frame (`learning_schedule.learning_due`)."""
        return learning_due(track, self._frames_seen, self.options, self._behind)

    def _filling_refreshes_due(self) -> frozenset[int]:
        """The particles whose filling memories may refresh on this frame (`learning_schedule`)."""
        return filling_refreshes_due(list(self._tracks.values()), self._frames_seen, self.options.memory_frames)

    def _lost_to_search(self, lost: list[TrackedParticle]) -> list[TrackedParticle]:
        """Every lost particle, or while live frames queue up (`note_backlog`) one of them, in turn.

        A lost particle's search covers the full window with every orientation: several of them (a client
        adding particles that are never found) would otherwise cost frames for the particles in view.
        """
        if not self._behind or len(lost) <= 1:
            return lost
        self._lost_turn += 1
        return [lost[self._lost_turn % len(lost)]]

    def note_backlog(self, frames_waiting: int) -> None:
        """Live mode: defer due appearance updates while ``defer_learning_backlog_frames`` frames wait."""
        limit = self.options.defer_learning_backlog_frames
        self._behind = limit > 0 and frames_waiting >= limit

    def _learn_now_or_later(self, pixels: np.ndarray, track: TrackedParticle, background: float,
                            claims: list[Placement]) -> None:
        """`_learn` now, or queued for after the frame's masks (`upkeep`) from the joint pass on.

        From there on each particle is concluded once: nothing of this frame reads its memory again. A learn
        that re-derives the shape re-centres the pose too: the frame's mask then reports (``extras``) the pose
        it was placed at, not the re-centred one (the next frame starts from that, as before).
        """
        if self._learning_later:
            self._upkeep.defer(partial(self._learn, pixels, track, background, list(claims)))
        else:
            self._learn(pixels, track, background, claims)

    def _learn(self, pixels: np.ndarray, track: TrackedParticle, background: float, claims: list[Placement]) -> None:
        half = track.memory.observe_reach_px(track.angle_deg)  # the whole turned grid: no bounds checks
        x0, y0 = int(round(track.x)) - half, int(round(track.y)) - half
        window = frame_window(pixels, x0, y0, 2 * half + 1, 2 * half + 1, track.polarity,
                              claimed(claims, x0, y0, 2 * half + 1), background)
        filling = track.memory.n_obs < self.options.memory_frames
        may_refresh = not filling or track.particle in self._filling_refresh_turns
        # An appearance seen on a background the map only guessed (under a prompted particle) counts less.
        weight = self._background.known_fraction(track.x, track.y, track.memory.radius_px)
        # Its first observations are re-divided as the map under them is learned, before a refresh (`early_memory`).
        track.memory.early.before_learn(track.memory, self._background.state, track.x, track.y, track.angle_deg,
                                        track.polarity, may_refresh and track.next_refresh_overdue() is not None)
        track.learn_shape(window.darkness, track.x - x0, track.y - y0, may_refresh, weight)

    def _emit(self, pixels: np.ndarray, track: TrackedParticle, score: float, claims: list[Placement],
              placed: Placement | None = None) -> ParticleMask:
        if placed is None:
            placed = track.memory.rasterize(track.x, track.y, track.angle_deg, pixels.shape)
        if placed is None or not placed.crop.any():
            track.lose()
            return ParticleMask.absent(track.particle, min(score, ABSENT_SCORE_CAP))
        claims.append(placed)
        extras = {"x": track.x, "y": track.y, "angle_deg": track.angle_deg, "z": track.last_z}
        box = placed.box  # a plain tuple in the shared record
        return ParticleMask(track.particle, True, score, (box.x0, box.y0, box.x1, box.y1), placed.crop,
                            extras=extras)

    def _reacquire(self, pixels: np.ndarray, track: TrackedParticle, claims: list[Placement]) -> ParticleMask | None:
        """Look for a lost particle over the whole frame; None if not found.

        Blob candidates on static features are dropped before the (costly) pose search; each
        verified match must still pass the identity gate (`_refused`).
        """
        blobs = candidate_positions(pixels, track, claims, REACQUIRE_BLOBS)
        radius, polarity = track.memory.radius_px, track.polarity
        moving = [(cx, cy) for cx, cy in blobs
                  if self._static.explains(pixels, cx, cy, radius, polarity) < STATIC_FRACTION]
        if len(moving) < len(blobs):
            logger.debug("particle %d: %d full-frame candidates on a static feature skipped", track.particle,
                         len(blobs) - len(moving))
        for cx, cy in moving[:REACQUIRE_CANDIDATES]:
            estimate, background = self._search(pixels, track, claims, centre=(cx, cy))
            if estimate is None:
                continue
            placed = track.memory.rasterize(estimate.x, estimate.y, estimate.angle_deg, pixels.shape)
            visible = 0.0 if placed is None else unclaimed_area(placed, claims) / max(placed.area_px, 1)
            if (placed is not None and track.is_detection(estimate, visible, self.options, strict=True)
                    and not self._refused(pixels, track, estimate, placed, visible)):
                return self._conclude(pixels, track, estimate, background, claims, strict=True, placed=placed,
                                      beside_static=False)
        return None

    def _may_stay(self, pixels: np.ndarray, track: TrackedParticle, near: PoseEstimate, claims: list[Placement]
                  ) -> bool:
        """Whether a vetted jump's alternative where the particle was may carry its id (a static feature may not)."""
        placed = track.memory.rasterize(near.x, near.y, near.angle_deg, pixels.shape)
        if placed is None:
            return False
        visible = unclaimed_area(placed, claims) / max(placed.area_px, 1)
        return self._refused(pixels, track, near, placed, visible) is None

    def _refused(self, pixels: np.ndarray, track: TrackedParticle, estimate: PoseEstimate, placed: Placement,
                 visible: float) -> str | None:
        """Why a detection may not carry the particle's id (`vetting.match_refusal`); None: it may."""
        return (match_refusal(self._static, pixels, track, estimate, placed, visible, self._entries, self._frames_seen)
                or exit_refusal(track, estimate, placed, self.options))
