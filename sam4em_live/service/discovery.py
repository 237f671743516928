"""Discovery in the running service: the detector every N frames, proposals, accept/reject, auto-add (issue 21).

Runs on the worker thread, but only every ``every_n_frames`` frames and on a block-averaged image (~256 cells
a side), so a 1024² frame costs about a millisecond of detection, once per N frames: cheaper than handing
the frame to another thread (a copy) and never stalling the loop for longer than that. Its cost is put in
the frame's ``timings_ms["discover"]`` (0 on frames without a run), so the status's ``stage_ms`` reports the
mean cost per frame.

Every decision is an event of the frame it was made on (``proposed``, ``accepted``, ``rejected``,
``auto_added``, ``proposal_expired``), added to the next result delivered, so it lands in the run's
``events.jsonl`` with the others. Ids come from the service's `ParticleIds`: discovery never reuses one,
and never gives a candidate the id of a lost particle (a lost particle found again elsewhere is a new
proposal: no identity hops).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from sam4em_live.control_api import QuotaExceeded
from sam4em_live.discover.detector import DetectorSettings, ParticleDetector
from sam4em_live.discover.policy import CandidateTrack, CandidateTracks, DiscoveryPolicy
from sam4em_live.particles import Prompt, PromptError
from sam4em_live.results import ServiceEvent
from sam4em_live.segment.embedded.static_map import StaticMap

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sam4em_live.config import DiscoveryConfig
    from sam4em_live.frames import Frame
    from sam4em_live.particles import ParticleEdit, ParticleMeasurement
    from sam4em_live.results import FrameResult
    from sam4em_live.service.particle_ids import ParticleIds

log = logging.getLogger(__name__)

#: The static map screens candidates only once it has this many updates (~1 s at 80 fps): before that it
#: cannot tell an immobile feature from a particle that has not moved yet.
STATIC_WARMUP_UPDATES = 8
#: A candidate whose contrast the long-run mean explains this much, and that has stayed within `STILL_PX` of
#: where it was first seen for `STILL_RUNS` detector runs, is a static feature. Both: a particle confined to a
#: small region is largely "explained" by the mean too, but it moves.
STATIC_EXPLAINED = 0.7
STILL_RUNS, STILL_PX = 16, 8.0


def settings_of(config: DiscoveryConfig) -> tuple[DetectorSettings, DiscoveryPolicy]:
    """The detector settings and the policy of a ``[discovery]`` table."""
    detector = DetectorSettings(cells=config.detector_cells, threshold_sigma=config.threshold_sigma,
                                polarity=config.polarity)
    policy = DiscoveryPolicy(config.min_diameter_px, config.max_diameter_px, config.min_contrast,
                             config.max_elongation, config.min_distance_px, config.persistence_frames)
    return detector, policy


class Discovery:
    """Proposals and auto-adds for one run.

    `on_frame` and `annotate_result` run on the worker thread; the `DiscoveryControl` methods
    (`proposals`, `accept`, `reject`, `accept_all`) on any thread.
    """

    def __init__(self, config: DiscoveryConfig, ids: ParticleIds, submit: Callable[[ParticleEdit], None]) -> None:
        self.config = config
        detector, self.policy = settings_of(config)
        self.detector = ParticleDetector(detector)
        self.static = StaticMap()
        self._ids = ids
        self._submit = submit
        self._lock = threading.Lock()
        self._tracks = CandidateTracks()
        self._events: list[ServiceEvent] = []
        self._next_proposal = 1
        self._frames_seen = 0
        self._last_frame = 0
        self._cost_ms = 0.0  # of the run on the last frame, for its result
        self._known: dict[int, tuple[float, float, float]] = {}  # particle -> last (x, y, radius) seen
        self.runs = 0  # detector runs so far, and their total cost (ms): for reports and tests
        self.total_ms = 0.0

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    # ------------------------------------------------------------ worker thread

    def on_frame(self, frame: Frame, measurements: Mapping[int, ParticleMeasurement], tracked: Sequence[int]) -> None:
        """Called for each frame before its edits are taken: auto-adds submitted now apply to this frame."""
        if not self.enabled:
            return
        self._last_frame = frame.index
        self._remember(measurements, tracked)
        keep_out = list(self._known.values())
        self.static.observe(frame.index, frame.pixels, (), keep_out)
        self._frames_seen += 1
        if (self._frames_seen - 1) % self.config.every_n_frames:
            return
        started = time.perf_counter()
        seen, forgotten = self.candidates(frame, keep_out)
        with self._lock:
            for track in forgotten:
                if track.proposal is not None and not (track.accepted or track.rejected):
                    self._events.append(ServiceEvent("proposal_expired", frame.index, None,
                                                     {"proposal": track.proposal}))
            ready = [t for t in seen if t.hits >= self.policy.persistence_frames and t.proposal is None]
            for track in ready[: self.config.max_proposals]:
                track.proposal = self._next_proposal
                self._next_proposal += 1
                if self.config.mode == "propose":
                    self._events.append(ServiceEvent("proposed", frame.index, None, _detail(track)))
        if self.config.mode == "auto":
            for track in ready:
                self._add(track, None, "auto_added", frame.index)
        self._cost_ms = (time.perf_counter() - started) * 1e3
        self.runs += 1
        self.total_ms += self._cost_ms

    def _remember(self, measurements: Mapping[int, ParticleMeasurement], tracked: Sequence[int]) -> None:
        """Last place of every particle tracked now: candidates there are that particle, present or lost."""
        for pid in set(self._known) - set(tracked):
            del self._known[pid]
        for pid, m in measurements.items():
            if m.present and pid in tracked:
                self._known[pid] = (m.x, m.y, max(m.major_axis_px / 2, math.sqrt(m.area_px / math.pi), 1.0))

    def candidates(self, frame: Frame, keep_out: list[tuple[float, float, float]]
                   ) -> tuple[list[CandidateTrack], list[CandidateTrack]]:
        """Detect, apply the policy's rules, link into tracks: (tracks seen now and not static, forgotten)."""
        found = [c for c in self.detector.detect(frame.pixels) if self.policy.refusal(c, keep_out) is None]
        with self._lock:
            seen, forgotten = self._tracks.update(found)
        return [t for t in seen if not self._static(frame, t)], forgotten

    def _static(self, frame: Frame, track: CandidateTrack) -> bool:
        """A static feature: it has not moved for `STILL_RUNS` runs, and the long-run mean explains it."""
        if (not self.config.ignore_static or self.static.n_updates < STATIC_WARMUP_UPDATES
                or track.age < STILL_RUNS or track.excursion_px > STILL_PX):
            return False
        c = track.candidate
        return self.static.explains(frame.pixels, c.x, c.y, c.diameter_px / 2, float(c.polarity)) >= STATIC_EXPLAINED

    def annotate_result(self, result: FrameResult) -> FrameResult:
        """The result with the decisions made since the last one and this frame's detection cost (ms)."""
        with self._lock:
            events, self._events = self._events, []
        cost, self._cost_ms = self._cost_ms, 0.0
        if not self.enabled:
            return result
        return dataclasses.replace(result, events=(*result.events, *events),
                                   timings_ms={**result.timings_ms, "discover": cost})

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
        return [t for t in self._tracks.tracks
                if t.proposal is not None and not (t.accepted or t.rejected) and self.config.mode == "propose"]

    def _add(self, track: CandidateTrack, particle: int | None, kind: str, frame: int) -> dict[str, int]:
        """Submit a prompt for ``track`` under a new id (or ``particle``); the decision becomes an event."""
        pid = self._ids.allocate() if particle is None else particle
        c = track.candidate
        prompt = Prompt(pid, None, ((c.x, c.y),), (1,), c.box, origin="discovery")
        track.accepted = True
        detail = {**_detail(track), "particle": pid}
        try:
            self._submit(prompt)
        except (PromptError, QuotaExceeded) as exc:
            log.warning("discovery could not add particle %d: %s", pid, exc)
            detail["refused"] = str(exc)
        with self._lock:
            self._events.append(ServiceEvent(kind, frame, pid, detail))
        return {"proposal": track.proposal or 0, "particle": pid}


def _detail(track: CandidateTrack) -> dict[str, Any]:
    return {"proposal": track.proposal, **track.candidate.as_dict()}
