"""One frame through the pipeline: prompts → segmentation → measurement → statistics → events.

`FrameProcessor` is the single implementation used by the live service and
by the offline ``track`` command (which simply feeds it every frame).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from sam4em_live.frames import Frame
from sam4em_live.measure import measure_mask
from sam4em_live.particles import (
    ParticleEdit,
    ParticleMask,
    ParticleMeasurement,
    PromptError,
    RemoveParticle,
    validate_edit,
)
from sam4em_live.results import FrameResult, ParticleStatistics, ServiceEvent
from sam4em_live.segment.base import BacklogAware, Segmenter, track_with_retries
from sam4em_live.segment.process_host import SegmenterProcess

log = logging.getLogger(__name__)


class PromptSchedule:
    """Edits waiting for their frame. Thread-safe: the control channel adds, the worker takes.

    An edit anchored to frame ``k`` is applied when the engine processes the
    first frame with index >= k (so a prompt for a frame that was dropped
    still lands, on the next frame the engine really sees); ``frame=None``
    means the next frame processed. Applied edits are re-anchored to the
    engine's actual frame index.
    """

    def __init__(self, edits: Sequence[ParticleEdit] = ()) -> None:
        self._lock = threading.Lock()
        self._pending: list[ParticleEdit] = list(edits)

    def add(self, edit: ParticleEdit) -> None:
        with self._lock:
            self._pending.append(edit)

    def due(self, frame_index: int) -> list[ParticleEdit]:
        with self._lock:
            ready = [e for e in self._pending if e.frame is None or e.frame <= frame_index]
            if not ready:
                return []
            self._pending = [e for e in self._pending if not (e.frame is None or e.frame <= frame_index)]
        return [e.at_frame(frame_index) for e in ready]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


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


class SegmentationFailed(RuntimeError):
    """The backend could not segment a frame (the frame is skipped; the stream goes on)."""


class FrameProcessor:
    """Runs the per-frame stages and times each of them (milliseconds).

    `process` runs one frame start to finish. The service uses `submit` and
    `collect` instead: with an in-process segmenter they are `process` and a
    hand-back (``depth`` 1); with a `SegmenterProcess` the frame is segmented in
    the child while this thread finishes earlier frames (``depth`` frames in flight).
    """

    def __init__(
        self,
        segmenter: Segmenter | SegmenterProcess,
        stats: StatsStage | None = None,
        events: EventStage | None = None,
        stats_every_frames: int = 10,
        intensity_weighted_centroid: bool = False,
    ) -> None:
        self.segmenter = segmenter
        self.stats = stats
        self.events = events
        self.stats_every_frames = stats_every_frames
        self.intensity_weighted_centroid = intensity_weighted_centroid
        self.prompt_errors = 0
        self.last_measurements: dict[int, ParticleMeasurement] = {}
        self._host = segmenter if isinstance(segmenter, SegmenterProcess) else None
        self._stats_cache: dict[int, ParticleStatistics] = {}
        self._snapshots_deferred: set[int] = set()
        #: Frames queued behind the one being processed (live mode; None: not reported, e.g. offline).
        self.backlog: int | None = None
        self._done: collections.deque[FrameResult] = collections.deque()
        self._pending: collections.deque[tuple[list[ServiceEvent], list[int]]] = collections.deque()

    # ---------------------------------------------------------------- pipelined use (the service)

    @property
    def depth(self) -> int:
        """Frames that may be in flight at once."""
        return self._host.depth if self._host is not None else 1

    @property
    def in_flight(self) -> int:
        return len(self._done) + (self._host.in_flight if self._host is not None else 0)

    def can_take(self, frame: Frame) -> bool:
        """Whether `submit` can start ``frame`` without collecting first (always, in process)."""
        return self._host is None or self._host.fits(frame)

    def submit(self, frame: Frame, edits: Sequence[ParticleEdit], status: Any = None) -> None:
        """Start a frame (in-process: run it now). Raises if the frame cannot be processed."""
        if self._host is None:
            self._done.append(self.process(frame, edits, status))
            return
        valid, events = self._validate(frame, edits)
        self._host.submit(frame, valid)
        self._pending.append((events, _removed(valid)))

    def collect(self, timeout_s: float | None = None, status: Any = None) -> FrameResult | None:
        """The oldest frame's result; None if not ready within ``timeout_s``.

        Raises `SegmentationFailed` if the backend failed on that frame (it is then done with).
        """
        if self._done:
            return self._done.popleft()
        assert self._host is not None, "collect() with nothing submitted"
        outcome = self._host.collect(timeout_s)
        if outcome is None:
            return None
        events, removed = self._pending.popleft()
        if outcome.error is not None:
            raise SegmentationFailed(f"frame {outcome.frame.index}: {outcome.error}")
        for edit, reason in outcome.rejected:
            self._reject(outcome.frame, edit, reason, events)
        return self._finish(outcome.frame, outcome.masks, events, removed, outcome.segment_ms, status)

    # ---------------------------------------------------------------- one frame, start to finish

    def process(self, frame: Frame, edits: Sequence[ParticleEdit], status: Any = None) -> FrameResult:
        if self._host is not None:
            raise RuntimeError("process() needs an in-process segmenter; use submit()/collect()")
        t0 = time.perf_counter()
        valid, events = self._validate(frame, edits)
        if self.backlog is not None and isinstance(self.segmenter, BacklogAware):
            self.segmenter.note_backlog(self.backlog)
        masks, rejected = track_with_retries(self.segmenter, frame, valid)  # type: ignore[arg-type]
        for edit, reason in rejected:
            self._reject(frame, edit, reason, events)
        return self._finish(frame, masks, events, _removed(valid), (time.perf_counter() - t0) * 1e3, status)

    def _finish(self, frame: Frame, masks: Sequence[ParticleMask], events: list[ServiceEvent],
                removed: Sequence[int], segment_ms: float, status: Any) -> FrameResult:
        """Measurement, statistics and events of a segmented frame."""
        t1 = time.perf_counter()
        measurements = tuple(
            measure_mask(m, frame.index, frame.pixels, self.intensity_weighted_centroid) for m in masks
        )
        t2 = time.perf_counter()
        if self.stats is not None:
            for particle in removed:
                self.stats.remove(particle)
        stats: dict[int, ParticleStatistics] = {}
        if self.stats is not None:
            self.stats.update(frame.index, measurements)
            stats = self._spread_snapshot(self.stats, frame.index)
        t3 = time.perf_counter()
        if self.events is not None:
            events.extend(self.events.update(frame.index, frame.shape, measurements, status, stats))
        t4 = time.perf_counter()
        self.last_measurements = {m.particle: m for m in measurements}
        return FrameResult(
            frame=frame,
            masks=tuple(masks),
            measurements=measurements,
            stats=stats,
            events=tuple(events),
            timings_ms={
                "segment": segment_ms, "measure": (t2 - t1) * 1e3,
                "stats": (t3 - t2) * 1e3, "events": (t4 - t3) * 1e3,
            },
            processed_s=time.time(),
        )

    def _spread_snapshot(self, stats: StatsStage, index: int) -> dict[int, ParticleStatistics]:
        """Statistics of every particle on publishing frames (``index % stats_every_frames == 0``), else {}.

        Each particle's snapshot (tMSD fits: ~0.4 ms) is taken on its own frame of
        the interval, so no frame pays for all of them at once (1.8 ms every tenth
        frame for 4 particles, measured); a published snapshot is at most one
        interval old (its ``frames_seen`` says how old). Live, while
        `BACKLOG_DEFER_FRAMES` frames wait, a particle's turn is skipped (never
        twice in a row) so the pipeline catches up sooner: that snapshot is then
        at most two intervals old.
        """
        every = self.stats_every_frames
        particles = stats.particles()
        phase = index % every
        behind = self.backlog is not None and self.backlog >= BACKLOG_DEFER_FRAMES
        for j, pid in enumerate(particles):
            if (j * every) // len(particles) == phase:
                if behind and pid in self._stats_cache and pid not in self._snapshots_deferred:
                    self._snapshots_deferred.add(pid)
                    continue
                self._snapshots_deferred.discard(pid)
                self._stats_cache.update(stats.snapshot(pid))
        if phase != 0:
            return {}
        for pid in set(self._stats_cache) - set(particles):
            del self._stats_cache[pid]
            self._snapshots_deferred.discard(pid)
        for pid in particles:
            if pid not in self._stats_cache:  # new since its turn came
                self._stats_cache.update(stats.snapshot(pid))
        return {pid: self._stats_cache[pid] for pid in particles if pid in self._stats_cache}

    def _reject(self, frame: Frame, edit: ParticleEdit, reason: str | Exception, events: list[ServiceEvent]) -> None:
        self.prompt_errors += 1
        log.warning("prompt for particle %d rejected at frame %d: %s", edit.particle, frame.index, reason)
        events.append(ServiceEvent("prompt_rejected", frame.index, edit.particle, {"reason": str(reason)}))

    def _validate(self, frame: Frame, edits: Sequence[ParticleEdit]) -> tuple[list[ParticleEdit], list[ServiceEvent]]:
        valid: list[ParticleEdit] = []
        events: list[ServiceEvent] = []
        for edit in edits:
            try:
                validate_edit(edit, frame.shape)
            except PromptError as exc:
                self._reject(frame, edit, exc, events)
                continue
            valid.append(edit)
        return valid, events


def _removed(edits: Sequence[ParticleEdit]) -> list[int]:
    return [e.particle for e in edits if isinstance(e, RemoveParticle)]
