"""Frames through the pipeline: prompts → segment stage → measurement → statistics → events.

`FrameProcessor` is the single implementation used by the live service and
by the offline ``track`` command (which simply feeds it every frame). Where
the backend runs (this thread or a child process) is the `SegmentStage`'s
business; the processor validates edits, hands them to the stage, and turns
each segmented frame into a `FrameResult`.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sam4em_live.measure import measure_masks
from sam4em_live.particles import (
    APPLIED,
    REFUSED_BY_QUOTA,
    REJECTED,
    EditRecord,
    ParticleEdit,
    ParticleMeasurement,
    PromptError,
    RemoveParticle,
    validate_edit,
)
from sam4em_live.results import FrameResult, ParticleStatistics, ServiceEvent
from sam4em_live.segment.stage import SegmentationFailed, SegmentOutcome, SegmentStage

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from sam4em_live.frames import Frame
    from sam4em_live.segment.base import RejectedEdit
    from sam4em_live.service.edits import Refusal
    from sam4em_live.service.seeding import SeedingLane

log = logging.getLogger(__name__)


class StatsStage(Protocol):
    """Rolling statistics (implemented by `sam4em_live.stats.rolling.RollingTrackStats`)."""

    def update(self, frame_index: int, measurements: Sequence[ParticleMeasurement]) -> None: ...

    def snapshot(self, particle: int | None = None) -> dict[int, ParticleStatistics]: ...

    def remove(self, particle: int) -> None: ...

    def particles(self) -> list[int]: ...


class EventStage(Protocol):
    """Event detection (implemented by `sam4em_live.hooks.events.EventDetector`)."""

    def update(self, frame_index: int, shape: tuple[int, int], measurements: Sequence[ParticleMeasurement],
               status: Any, stats: dict[int, ParticleStatistics] | None = None) -> list[ServiceEvent]: ...


#: Live mode: while at least this many frames wait, a particle's statistics snapshot may be put off one turn.
BACKLOG_DEFER_FRAMES = 2
#: At most this many statistics snapshots a frame (~0.2-0.4 ms each, two MSD fits; issue 23, many particles):
#: with more than ``stats_every_frames`` x this particles, each one's turn comes every ceil(N / this) frames
#: instead of once an interval (50 particles: every 25 frames, where 5 snapshots a frame cost ~1.7 ms at
#: load; the MSDs span the whole window, so a snapshot that much older differs little).
MAX_SNAPSHOTS_PER_FRAME = 2


class _PendingFrame(NamedTuple):
    """What the processor keeps of a frame while the stage segments it."""

    events: list[ServiceEvent]  # prompt rejections so far; the frame's events are added when it is finished
    removed: list[int]  # particles removed by this frame's edits (their statistics go)
    backlog: int | None  # frames waiting behind it (live mode), or None
    decided: list[EditRecord]  # edits refused before the stage, in the order decided
    handed: list[tuple[ParticleEdit, str]]  # (edit, kind) handed to the stage: applied unless it rejects them


class FrameProcessor:
    """Hands frames to a `SegmentStage`, then measures, runs statistics and emits events (timed, milliseconds).

    `submit` validates a frame's edits and starts it on the stage; `collect`
    finishes the oldest frame in flight and returns its `FrameResult`. Frames
    are collected in submission order, up to ``stage.depth`` in flight (the
    caller asks the stage: ``fits``, ``in_flight``). `process` is both at once
    for callers that go one frame at a time. Used from one thread only.
    """

    def __init__(
        self,
        stage: SegmentStage,
        stats: StatsStage | None = None,
        events: EventStage | None = None,
        stats_every_frames: int = 10,
        intensity_weighted_centroid: bool = False,
        seeding: SeedingLane | None = None,
    ) -> None:
        self._stage = stage
        self._seeding = seeding  # live: prompts seeded beside the loop (`service.seeding`)
        self._stats = stats
        self._events = events
        self._stats_every_frames = stats_every_frames
        self._intensity_weighted_centroid = intensity_weighted_centroid
        self._prompt_errors = 0
        self._last_measurements: dict[int, ParticleMeasurement] = {}
        self._stats_cache: dict[int, ParticleStatistics] = {}
        self._snapshots_deferred: set[int] = set()
        self._pending: collections.deque[_PendingFrame] = collections.deque()

    @property
    def prompt_errors(self) -> int:
        """Edits rejected so far (invalid for the frame, or refused by the backend)."""
        return self._prompt_errors

    @property
    def last_measurements(self) -> dict[int, ParticleMeasurement]:
        """The last finished frame's measurements by particle id (replaced, never mutated: safe to read)."""
        return self._last_measurements

    @property
    def seeding(self) -> SeedingLane | None:
        """The live run's seeding lane (None: prompts are seeded on their own frame, on this thread)."""
        return self._seeding

    def close(self) -> None:
        """Stop the seeding lane's helper thread, if any (teardown)."""
        if self._seeding is not None:
            self._seeding.close()

    def submit(self, frame: Frame, edits: Sequence[ParticleEdit], backlog: int | None = None,
               refused: Sequence[Refusal] = ()) -> None:
        """Validate ``edits`` against ``frame`` and start it on the stage (only while ``stage.fits(frame)``).

        ``backlog``: in live mode, the frames waiting behind this one; the backend
        may defer work and a statistics snapshot may be put off while behind.
        None (every-frame and offline runs) keeps results independent of timing.
        ``refused``: edits the service refused before they reached the stage
        (quotas), with the reason; they are counted, recorded in the frame's
        ``edits`` and (those to announce) reported as ``prompt_rejected`` events
        on this frame. With a seeding lane, valid edits that hold a prompt are seeded aside and handed to
        the stage on a later frame (`service.seeding`). Raises what the stage's ``submit`` raises.
        """
        lane = self._seeding
        tracked = set(self._stage.particles()) if edits or refused or (lane is not None and lane.busy) else set()
        decided: list[EditRecord] = []
        events: list[ServiceEvent] = []
        for refusal in refused:
            outcome = REFUSED_BY_QUOTA if refusal.quota is not None else REJECTED
            decided.append(EditRecord(refusal.edit, frame.index, _kind(refusal.edit, tracked), outcome,
                                      refusal.checked, refusal.reason, refusal.quota))
            if refusal.announce:  # the others are counted by the quotas
                self._prompt_errors += 1
                self._reject(frame, refusal.edit, refusal.reason, events)
        valid: list[ParticleEdit] = []
        for edit in edits:
            try:
                validate_edit(edit, frame.shape)
            except PromptError as exc:
                self._prompt_errors += 1
                self._reject(frame, edit, exc, events)
                decided.append(EditRecord(edit, frame.index, _kind(edit, tracked), REJECTED, "frame", str(exc)))
                continue
            valid.append(edit)
        seeded = None
        if lane is not None and (valid or lane.busy):
            valid, seeded = lane.route(frame, valid, backlog)
            for edit, reason in seeded.rejected if seeded is not None else ():  # could not be seeded
                edit = edit.at_frame(frame.index)
                self._prompt_errors += 1
                self._reject(frame, edit, reason, events)
                decided.append(EditRecord(edit, frame.index, _kind(edit, tracked), REJECTED, "backend", reason))
        handed: list[tuple[ParticleEdit, str]] = []
        for edit in valid:
            handed.append((edit, _kind(edit, tracked)))
            if isinstance(edit, RemoveParticle):
                tracked.discard(edit.particle)
            else:
                tracked.add(edit.particle)
        if backlog is not None:
            self._stage.note_backlog(backlog)
        self._stage.submit(frame, valid, seeded)
        self._pending.append(_PendingFrame(events, _removed(valid), backlog, decided, handed))

    def collect(self, timeout_s: float | None = None, status: Any = None) -> FrameResult | None:
        """The oldest frame's result; None if the stage has not segmented it within ``timeout_s``.

        ``status`` goes to the event stage. Raises `SegmentationFailed` if the
        backend failed on that frame (it is then done with), and what the stage
        raises when it is gone.
        """
        try:
            outcome = self._stage.collect(timeout_s)
        except SegmentationFailed:
            self._pending.popleft()
            raise
        if outcome is None:
            return None
        pending = self._pending.popleft()
        for edit, reason in outcome.rejected:
            self._prompt_errors += 1
            self._reject(outcome.frame, edit, reason, pending.events)
        return self._finish(outcome, pending, status)

    def process(self, frame: Frame, edits: Sequence[ParticleEdit], status: Any = None,
                backlog: int | None = None) -> FrameResult:
        """One frame start to finish: `submit` then `collect` (nothing else may be in flight)."""
        if self._pending:
            raise RuntimeError("process() with frames in flight; collect them first")
        self.submit(frame, edits, backlog)
        result = self.collect(None, status)
        assert result is not None  # collect(None) waits for the frame
        return result

    def _finish(self, outcome: SegmentOutcome, pending: _PendingFrame, status: Any) -> FrameResult:
        """Measurement, statistics and events of a segmented frame."""
        frame = outcome.frame
        t1 = time.perf_counter()
        measurements = measure_masks(outcome.masks, frame.index, frame.pixels, self._intensity_weighted_centroid)
        t2 = time.perf_counter()
        stats: dict[int, ParticleStatistics] = {}
        if self._stats is not None:
            for particle in pending.removed:
                self._stats.remove(particle)
            self._stats.update(frame.index, measurements)
            stats = self._spread_snapshot(self._stats, frame.index, pending.backlog)
        t3 = time.perf_counter()
        events = pending.events
        if self._events is not None:
            events.extend(self._events.update(frame.index, frame.shape, measurements, status, stats))
        t4 = time.perf_counter()
        self._last_measurements = {m.particle: m for m in measurements}
        return FrameResult(
            frame=frame,
            masks=outcome.masks,
            measurements=measurements,
            stats=stats,
            events=tuple(events),
            timings_ms={
                "segment": outcome.segment_ms, "measure": (t2 - t1) * 1e3,
                "stats": (t3 - t2) * 1e3, "events": (t4 - t3) * 1e3,
            },
            processed_s=time.time(),
            edits=(*pending.decided, *_stage_outcomes(frame.index, pending.handed, outcome.rejected)),
        )

    def _spread_snapshot(self, stats: StatsStage, index: int, backlog: int | None) -> dict[int, ParticleStatistics]:
        """Statistics of every particle on publishing frames (``index % stats_every_frames == 0``), else {}.

        Each particle's snapshot (tMSD fits: ~0.4 ms) is taken on its own frame of
        the interval, so no frame pays for all of them at once (1.8 ms every tenth
        frame for 4 particles, measured); a published snapshot is at most one
        interval old (its ``frames_seen`` says how old). Live, while
        `BACKLOG_DEFER_FRAMES` frames wait, a particle's turn is skipped (never
        twice in a row) so the pipeline catches up sooner: that snapshot is then
        at most two intervals old. With more than `MAX_SNAPSHOTS_PER_FRAME` turns a
        frame (over 20 particles at the default interval) the turns spread over
        ceil(N / `MAX_SNAPSHOTS_PER_FRAME`) frames: snapshots are up to that old, and
        a new particle's statistics are published once it has had one.
        """
        every = self._stats_every_frames
        particles = stats.particles()
        cycle = max(every, -(-len(particles) // MAX_SNAPSHOTS_PER_FRAME))  # frames between a particle's turns
        phase = index % cycle
        behind = backlog is not None and backlog >= BACKLOG_DEFER_FRAMES
        taken = 0
        for j, pid in enumerate(particles):
            if (j * cycle) // len(particles) == phase:
                if behind and pid in self._stats_cache and pid not in self._snapshots_deferred:
                    self._snapshots_deferred.add(pid)
                    continue
                self._snapshots_deferred.discard(pid)
                self._stats_cache.update(stats.snapshot(pid))
                taken += 1
        if index % every != 0:
            return {}
        for pid in set(self._stats_cache) - set(particles):
            del self._stats_cache[pid]
            self._snapshots_deferred.discard(pid)
        # Particles new since their turn came: all of them while the turns fit in an interval; with more
        # particles (many landing at once) a few a frame, the others published after their own turn.
        budget = len(particles) if cycle == every else MAX_SNAPSHOTS_PER_FRAME - taken
        for pid in particles:
            if pid not in self._stats_cache and budget > 0:
                self._stats_cache.update(stats.snapshot(pid))
                budget -= 1
        return {pid: self._stats_cache[pid] for pid in particles if pid in self._stats_cache}

    def _reject(self, frame: Frame, edit: ParticleEdit, reason: str | Exception, events: list[ServiceEvent]) -> None:
        log.warning("prompt for particle %d rejected at frame %d: %s", edit.particle, frame.index, reason)
        events.append(ServiceEvent("prompt_rejected", frame.index, edit.particle, {"reason": str(reason)}))



def _removed(edits: Sequence[ParticleEdit]) -> list[int]:
    return [e.particle for e in edits if isinstance(e, RemoveParticle)]


def _kind(edit: ParticleEdit, tracked: Collection[int]) -> str:
    """``removal``, ``correction`` (a prompt for a particle tracked now) or ``prompt`` (a new particle)."""
    if isinstance(edit, RemoveParticle):
        return "removal"
    return "correction" if edit.particle in tracked else "prompt"


def _stage_outcomes(frame_index: int, handed: Sequence[tuple[ParticleEdit, str]],
                    rejected: Sequence[RejectedEdit]) -> list[EditRecord]:
    """The records of the edits handed to the stage: applied, unless the backend rejected them.

    The backend names a rejected edit by value (it may come back from a child process), so each
    rejection is matched to the first equal edit not matched yet.
    """
    unmatched = list(rejected)
    records: list[EditRecord] = []
    for edit, kind in handed:
        match = next((r for r in unmatched if r.edit == edit), None)
        if match is None:
            records.append(EditRecord(edit, frame_index, kind, APPLIED, "backend"))
        else:
            unmatched.remove(match)
            records.append(EditRecord(edit, frame_index, kind, REJECTED, "backend", match.reason))
    return records
