"""Discovery in the running service: proposals, accept/reject, auto-add; the detector on its own thread (issue 21).

The worker never runs the detector. Every ``every_n_frames`` frames it offers the frame (by reference) and
the tracked particles' places to a `DetectorThread` (`discovery_thread.py`), which takes the latest frame
offered (older ones not taken yet are dropped), runs the detector and the policy, and hands back what it
decided through a bounded queue. The worker applies those outcomes at the start of a frame: their events
go into the next result delivered, and auto-adds are prompted so they apply to that frame.

Live (``backpressure = "latest"``) the worker drains outcomes without waiting, and the detector thread
keeps out of the frame loop's way (`discovery_thread.py`): it rests after each run to use at most
`LIVE_CPU_SHARE` of a core (less while the worker is behind), runs at a lower priority, and its stages wait
while the worker holds a frame (`StagePauses` on the service's `WorkerIdle`). In an every-frame run (offline,
replay) results must not depend on timing, so the worker runs in lockstep: the outcome of the frame offered last is waited for at the next
frame, while the detector ran in parallel with that frame's segmentation (no rest, no gate).

Cost, reported three ways: ``timings_ms["discover"]`` of each result is the detector thread's time
for the runs applied on that frame (so the status's ``stage_ms.discover`` is its mean per frame, off the
worker), ``timings_ms["discover_worker"]`` what discovery cost the worker itself (offer, drain,
auto-adds); and every `COST_EVENT_RUNS` runs a ``discovery_cost`` event (runs, ms per run, frames
offered and superseded, lag in frames, rests and gate waits) lands in ``events.jsonl``.

Every decision is an event of the frame it was applied on (``proposed``, ``accepted``, ``rejected``,
``auto_added``, ``proposal_expired``). Ids come from the service's `ParticleIds`: discovery never reuses
one and never gives a candidate the id of a lost particle. In auto mode a candidate that appears while a
particle is lost inside the field (for at most `discovery_places.REFIND_WINDOW_FRAMES`) may be that
particle found again elsewhere: it is proposed (its ``lost`` field names the lost particles), not added, so a client decides —
accepting it under the lost id, or as a new particle. Auto mode also adds nothing where its own additions
have not landed yet, nor while a client's prompt has not (`TrackedPlaces`, ``discovery_places.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from sam4em_live.control_api import QuotaExceeded
from sam4em_live.discover.detector import DetectorSettings, ParticleDetector
from sam4em_live.discover.policy import STILL_WINDOW, CandidateTrack, CandidateTracks, DiscoveryPolicy
from sam4em_live.particles import Prompt, PromptError
from sam4em_live.results import ServiceEvent
from sam4em_live.segment.embedded.static_map import StaticMap
from sam4em_live.service.discovery_places import TrackedPlaces
from sam4em_live.service.discovery_thread import (
    DetectionJob,
    DetectionOutcome,
    DetectorThread,
    DiscoveryCost,
    StagePauses,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sam4em_live.config import DiscoveryConfig
    from sam4em_live.frames import Frame
    from sam4em_live.particles import ParticleEdit, ParticleMeasurement
    from sam4em_live.results import FrameResult
    from sam4em_live.service.particle_ids import ParticleIds
    from sam4em_live.service.worker_idle import WorkerIdle

log = logging.getLogger(__name__)

#: The static map screens candidates only once it has this many updates (~1 s at 80 fps): before that it
#: cannot tell an immobile feature from a particle that has not moved yet.
STATIC_WARMUP_UPDATES = 8
#: A candidate whose contrast the long-run mean explains this much, and whose last `STILL_RUNS` detections all
#: lie within `STILL_PX` of their mean (`CandidateTrack.recent_excursion_px`), is a static feature. Both: a
#: particle confined to a small region is largely "explained" by the mean too, but it moves. Measured on the
#: discovery benchmark's clips (2026-12-07, 2,000 tracks): static features stray 1.3–3.2 px (their centroid
#: noise) unless a particle passes over them; particles, even the slowest real (MoNet) paths, ≥ 4.0 px. At
#: 8 px the screen hid nearly still particles (recall 0.90–0.93 in `dose-steps`, `defocus`).
STATIC_EXPLAINED = 0.7
STILL_RUNS, STILL_PX = STILL_WINDOW, 3.5


#: Blobs are seeded from this many noise sigmas (or ``threshold_sigma``, if lower) and followed as tracks; a
#: track counts once its mean score (`CandidateTrack.score`) reaches ``threshold_sigma``. Following the faint
#: ones also lets the static screen see a static feature that flickers around the threshold stay put.
SEED_SIGMA = 3.5
#: Evidence carried from run to run (`discover.evidence.CarriedEvidence`): the share, how far a particle may
#: move between two runs (px) and keep it, and the most carried (sigmas). Tuned on the discovery benchmark's
#: tuning clips (seeds 100, 101; 2026-12-07): decay 0.5–0.8, reach 6–10 px and cap 4–9 all within 0.01 of
#: each other in pooled F1 (0.787–0.797), against 0.768 carrying nothing.
CARRY_DECAY, CARRY_REACH_PX, CARRY_CAP = 0.7, 6.0, 6.0


def settings_of(config: DiscoveryConfig) -> tuple[DetectorSettings, DiscoveryPolicy]:
    """The detector settings and the policy of a ``[discovery]`` table."""
    detector = DetectorSettings(cells=config.detector_cells, threshold_sigma=config.threshold_sigma,
                                seed_sigma=SEED_SIGMA, polarity=config.polarity, carry_decay=CARRY_DECAY,
                                carry_reach_px=CARRY_REACH_PX, carry_cap=CARRY_CAP)
    policy = DiscoveryPolicy(config.min_diameter_px, config.max_diameter_px, config.min_contrast,
                             config.max_elongation, config.min_distance_px, config.persistence_frames)
    return detector, policy


#: A ``discovery_cost`` event every this many detector runs (its figures cover those runs).
COST_EVENT_RUNS = 250
#: Longest a lockstep worker waits for the detector's outcome before it goes on without it.
LOCKSTEP_TIMEOUT_S = 30.0
#: Live, the detector thread uses at most this share of one core (`DetectorThread`): it rests between runs.
LIVE_CPU_SHARE = 0.25


class Discovery:
    """Proposals and auto-adds for one run.

    `on_frame`, `annotate_result` and `close` run on the worker thread; `detect` on the detector thread;
    the `DiscoveryControl` methods (`proposals`, `accept`, `reject`, `accept_all`) on any thread.
    ``lockstep``: wait for each detector outcome at the next frame (every-frame runs: timing-independent);
    else (live) the detector's stages wait while ``worker`` (the service's) holds a frame.
    """

    def __init__(self, config: DiscoveryConfig, ids: ParticleIds, submit: Callable[[ParticleEdit], None],
                 lockstep: bool = False, worker: WorkerIdle | None = None) -> None:
        self.config = config
        detector, self.policy = settings_of(config)
        self.detector = ParticleDetector(detector)
        self.static = StaticMap()  # detector thread only (and the caller of `candidates`)
        self.lockstep = lockstep
        self._ids = ids
        self._submit = submit
        self._lock = threading.Lock()
        self._tracks = CandidateTracks()
        self._events: list[ServiceEvent] = []
        self._next_proposal = 1
        self._static_last: int | None = None  # frame of the static map's last update (detector thread)
        # worker thread only
        self._thread: DetectorThread | None = None
        self._outstanding = 0  # lockstep: outcomes offered for and not applied yet
        self._frames_seen = 0
        self._last_frame = 0
        self._detect_ms = 0.0  # detector time of the outcomes applied since the last result
        self._worker_ms = 0.0  # discovery's own time on the worker since the last result
        self._held_for_lost = False  # auto mode: some track was proposed because a particle was lost
        self.places = TrackedPlaces(ids)  # where discovery adds nothing (worker thread; `_add` from any)
        self.cost = DiscoveryCost()
        # live: the detector's stages wait while the worker holds a frame (lockstep: the worker waits for them)
        self.gate = None if lockstep or worker is None else StagePauses(worker)

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    # ------------------------------------------------------------ worker thread

    def on_frame(self, frame: Frame, measurements: Mapping[int, ParticleMeasurement], tracked: Sequence[int]) -> None:
        """Called for each frame before its edits are taken: auto-adds submitted now apply to this frame."""
        if not self.enabled:
            return
        started = time.perf_counter()
        self._last_frame = frame.index
        self.places.update(frame.index, frame.shape, measurements, tracked)
        keep_out = self.places.keep_out()
        self._apply_outcomes(frame.index, keep_out)
        self._frames_seen += 1
        if (self._frames_seen - 1) % self.config.every_n_frames == 0:
            thread = self._detector_thread()
            thread.offer(DetectionJob(frame, keep_out, time.perf_counter()))
            self.cost.offered += 1
            self._outstanding += 1
        self._worker_ms += (time.perf_counter() - started) * 1e3

    def _detector_thread(self) -> DetectorThread:
        if self._thread is None:
            self._thread = DetectorThread(self.detect, cpu_share=None if self.lockstep else LIVE_CPU_SHARE,
                                          behind=self.gate.behind if self.gate is not None else None)
            self._thread.start()
        return self._thread

    def _apply_outcomes(self, index: int, keep_out: tuple[tuple[float, float, float], ...]) -> None:
        """Take what the detector thread decided: events, costs, and in auto mode the additions.

        Live, only what is back already; in lockstep, first the outcome still out (the detector ran while
        the worker segmented the previous frame).
        """
        if self._held_for_lost and not self.places.lost(index):
            self._release_held(index)
        while (outcome := self._next_outcome()) is not None:
            self.cost.add(outcome, index)
            self._detect_ms += outcome.cost_ms
            with self._lock:
                self._events.extend(outcome.events)
            occupied = list(keep_out)
            for track in outcome.ready:
                self._decide(track, index, occupied)  # adds what it adds to ``occupied``
            if self.cost.runs % COST_EVENT_RUNS == 0:
                with self._lock:
                    self._events.append(ServiceEvent("discovery_cost", index, None, self.cost_report()))

    def _next_outcome(self) -> DetectionOutcome | None:
        if self._thread is None:
            return None
        wait = self.lockstep and self._outstanding > 0
        try:
            outcome = self._thread.outcomes.get(timeout=LOCKSTEP_TIMEOUT_S) if wait else self._thread.outcomes.get_nowait()
        except queue.Empty:
            if wait:
                log.warning("discovery: no detector outcome in %.0f s; going on without it", LOCKSTEP_TIMEOUT_S)
                self._outstanding = 0
            return None
        self._outstanding = max(self._outstanding - 1, 0)
        return outcome

    def _decide(self, track: CandidateTrack, index: int, occupied: list[tuple[float, float, float]]) -> None:
        """Auto mode: a track the detector found ready becomes a particle, or a proposal if it may be a lost one.

        ``occupied``: (x, y, radius) of the particles tracked now and of those added from the same outcome.
        """
        c = track.candidate
        if self.policy.refusal(c, occupied) is not None:
            # tracked since it was detected (a client's prompt, the segmenter re-acquired a lost particle, or
            # a weaker candidate of the same run on the same place): never a second id for one particle
            track.accepted = True
            return
        if self.places.prompts_waiting(index):  # it may be the particle a client's prompt is about to start
            with self._lock:
                track.proposal = None  # ready again at the next run
            return
        lost = self.places.lost(index)
        if lost:
            self._held_for_lost = True
            with self._lock:
                track.lost = lost
                self._events.append(ServiceEvent("proposed", index, None, _detail(track)))
            return
        self._add(track, None, "auto_added", index)
        occupied.append((c.x, c.y, c.diameter_px / 2))

    def _release_held(self, index: int) -> None:
        """Auto mode, no particle lost any more: the tracks proposed as maybe-lost ones may be added again.

        Their proposals close (``proposal_expired``, reason ``none_lost``); the next detector run finds such a
        track ready as any other, and `_decide` adds it unless it is now near a tracked particle (the lost one
        found there by the segmenter). Without this a newcomer first seen while a particle was lost (the rod
        of ``dose-steps`` during its beam-blanked frames) stayed a proposal for good.
        """
        self._held_for_lost = False
        with self._lock:
            for track in self._tracks.tracks:
                if track.lost and track.proposal is not None and not (track.accepted or track.rejected):
                    self._events.append(ServiceEvent("proposal_expired", index, None,
                                                     {"proposal": track.proposal, "reason": "none_lost"}))
                    track.proposal, track.lost = None, ()

    def annotate_result(self, result: FrameResult) -> FrameResult:
        """The result with the decisions applied since the last one and their cost (ms)."""
        if not self.enabled:
            return result
        for event in result.events:
            if event.kind == "prompt_rejected" and event.particle is not None:
                self.places.refused(event.particle)  # it will never land
        with self._lock:
            events, self._events = self._events, []
        timings = {"discover": self._detect_ms, "discover_worker": self._worker_ms}
        self._detect_ms = self._worker_ms = 0.0
        return dataclasses.replace(result, events=(*result.events, *events),
                                   timings_ms={**result.timings_ms, **timings})

    def cost_report(self) -> dict[str, float | int]:
        """The detector's cost and lag so far (the ``discovery_cost`` event's detail)."""
        thread = self._thread
        return self.cost.as_dict(thread.jobs.superseded if thread else 0, thread.errors if thread else 0,
                                 thread.paced_s if thread else 0.0, self.gate.waited_s if self.gate else 0.0,
                                 thread.backoffs if thread else 0)

    def close(self) -> None:
        """End the detector thread (teardown; idempotent)."""
        if self._thread is not None:
            self._thread.close()

    # ------------------------------------------------------------ detector thread

    def detect(self, job: DetectionJob) -> DetectionOutcome:
        """One detector run: candidates, tracks, the static screen, proposals (propose mode) or ready tracks."""
        started = time.perf_counter()
        gated_s = 0.0
        if self.gate is not None:
            self.gate.new_run()
            gated_s = self.gate.waited_s
        frame = job.frame
        self._observe_static(frame, job.keep_out)
        seen, forgotten = self.candidates(frame, list(job.keep_out))
        events: list[ServiceEvent] = []
        with self._lock:
            for track in forgotten:
                if track.proposal is not None and not (track.accepted or track.rejected):
                    events.append(ServiceEvent("proposal_expired", frame.index, None, {"proposal": track.proposal}))
            ready = [t for t in seen if t.hits >= self.policy.persistence_frames and t.proposal is None
                     and self._judged(frame, t)]
            ready = ready[: self.config.max_proposals]
            for track in ready:
                track.proposal = self._next_proposal
                self._next_proposal += 1
                if self.config.mode == "propose":
                    events.append(ServiceEvent("proposed", frame.index, None, _detail(track)))
        auto = tuple(ready) if self.config.mode == "auto" else ()
        # the run's cost: its wall time less its waits for an idle worker (`StagePauses`), reported apart
        gated_s = (self.gate.waited_s if self.gate is not None else 0.0) - gated_s
        return DetectionOutcome(frame.index, auto, tuple(events), (time.perf_counter() - started - gated_s) * 1e3,
                                (started - job.offered_s) * 1e3)

    def _observe_static(self, frame: Frame, keep_out: tuple[tuple[float, float, float], ...]) -> None:
        """Fold the frame into the static map, whichever frames come.

        Every run until the map can screen (`STATIC_WARMUP_UPDATES`: start-up tracks are judged within ~8 runs,
        `_judged`), then on the map's own schedule (in frames).
        """
        due = 0 if self.static.n_updates < STATIC_WARMUP_UPDATES else self.static.interval
        last = self._static_last
        if last is None or frame.index - last >= due or frame.index < last:
            self._static_last = frame.index
            self.static.observe(0, frame.pixels, (), keep_out)  # 0: due now (the map counts in frame indices)

    def candidates(self, frame: Frame, keep_out: list[tuple[float, float, float]]
                   ) -> tuple[list[CandidateTrack], list[CandidateTrack]]:
        """Detect, apply the policy's rules, link into tracks: (tracks seen now and not static, forgotten)."""
        pause = self.gate.pause if self.gate is not None else None
        found = [c for c in self.detector.detect(frame.pixels, pause) if self.policy.refusal(c, keep_out) is None]
        if pause is not None:
            pause()  # the tracks and the policy are Python: their turn too
        with self._lock:
            seen, forgotten = self._tracks.update(found)
        unknown = self.static.n_updates < STATIC_WARMUP_UPDATES
        for track in seen:
            if track.age == 1:
                track.before_map = unknown
        threshold = self.detector.settings.threshold_sigma
        return [t for t in seen if t.score >= threshold and not self._static(frame, t)], forgotten

    def _judged(self, frame: Frame, track: CandidateTrack) -> bool:
        """Auto mode: whether a track may be added yet (held: first seen before the static map knew the scene).

        At start-up every immobile feature looks like a particle (the map has not learned it yet); auto mode
        added them as particles, whose ids the tracker later handed to newcomers. (Propose mode proposes them
        at once: a person decides, and a proposal that is not judged yet costs nothing.) Released when the track
        moves (its recent places stray beyond `STILL_PX`), when the warm map does not explain it (it was not
        there while the map learned), or, after `STILL_RUNS` detections, by the ordinary static screen (a track
        that reaches this point has passed it). An immobile particle present from the start waits for the
        screen like a static feature (and, being still, is screened: a client prompts it).
        """
        if (self.config.mode != "auto" or not (track.before_map and self.config.ignore_static)
                or track.recent_excursion_px > STILL_PX):
            return True
        if self.static.n_updates < STATIC_WARMUP_UPDATES:
            return False
        if track.age >= STILL_RUNS:
            return True
        c = track.candidate
        return self.static.explains(frame.pixels, c.x, c.y, c.diameter_px / 2, float(c.polarity)) < STATIC_EXPLAINED

    def _static(self, frame: Frame, track: CandidateTrack) -> bool:
        """A static feature: it has not moved for `STILL_RUNS` runs, and the long-run mean explains it."""
        if (not self.config.ignore_static or self.static.n_updates < STATIC_WARMUP_UPDATES
                or track.age < STILL_RUNS or track.recent_excursion_px > STILL_PX):
            return False
        c = track.candidate
        return self.static.explains(frame.pixels, c.x, c.y, c.diameter_px / 2, float(c.polarity)) >= STATIC_EXPLAINED

    # ------------------------------------------------------------ any thread (DiscoveryControl)

    def proposals(self) -> list[dict[str, Any]]:
        with self._lock:
            return [_detail(t) for t in self._open()]

    def accept(self, proposals: Sequence[int], particle: int | None = None) -> list[dict[str, int]]:
        if particle is not None and len(proposals) != 1:
            raise PromptError("a chosen particle id needs exactly one proposal")
        with self._lock:
            open_by_id = {t.proposal: t for t in self._open()}
            missing = [p for p in proposals if p not in open_by_id]
            if missing:
                raise KeyError(f"no open proposal {missing[0]}")
            tracks = [open_by_id[p] for p in proposals]
            for track in tracks:
                track.accepted = True
        return [self._add(track, particle, "accepted", self._last_frame) for track in tracks]

    def reject(self, proposals: Sequence[int]) -> list[int]:
        with self._lock:
            open_by_id = {t.proposal: t for t in self._open()}
            done = []
            for p in proposals:
                track = open_by_id.get(p)
                if track is None:
                    raise KeyError(f"no open proposal {p}")
                track.rejected = True
                done.append(p)
                self._events.append(ServiceEvent("rejected", self._last_frame, None, {"proposal": p}))
        return done

    def accept_all(self) -> list[dict[str, int]]:
        with self._lock:
            ids = [t.proposal for t in self._open() if t.proposal is not None]
        return self.accept(ids)

    def _open(self) -> list[CandidateTrack]:
        """Proposals awaiting a decision: every one in propose mode; in auto mode those that may be a lost particle."""
        return [t for t in self._tracks.tracks if t.proposal is not None and not (t.accepted or t.rejected)
                and (self.config.mode == "propose" or t.lost)]

    def _add(self, track: CandidateTrack, particle: int | None, kind: str, frame: int) -> dict[str, int]:
        """Submit a prompt for ``track`` under a new id (or ``particle``); the decision becomes an event."""
        pid = self._ids.allocate() if particle is None else particle
        c = track.candidate
        prompt = Prompt(pid, None, ((c.x, c.y),), (1,), c.box, origin="discovery")
        track.accepted = True
        detail = {**_detail(track), "particle": pid}
        self.places.place_own(pid, (c.x, c.y, c.diameter_px / 2))
        try:
            self._submit(prompt)
        except (PromptError, QuotaExceeded) as exc:
            log.warning("discovery could not add particle %d: %s", pid, exc)
            detail["refused"] = str(exc)
        with self._lock:
            self._events.append(ServiceEvent(kind, frame, pid, detail))
        return {"proposal": track.proposal or 0, "particle": pid}


def _detail(track: CandidateTrack) -> dict[str, Any]:
    """A proposal's JSON-able form; ``lost`` (auto mode) names the lost particles it may be."""
    detail: dict[str, Any] = {"proposal": track.proposal, **track.candidate.as_dict()}
    if track.lost:
        detail["lost"] = list(track.lost)
    return detail
