"""One frame through the pipeline: prompts → segmentation → measurement → statistics → events.

`FrameProcessor` is the single implementation used by the live service and
by the offline ``track`` command (which simply feeds it every frame).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from sam4em_live.frames import Frame
from sam4em_live.measure import ParticleMeasurement, measure_mask
from sam4em_live.results import FrameResult, ServiceEvent
from sam4em_live.segment.base import (
    ParticleEdit,
    ParticleMask,
    PromptError,
    RemoveParticle,
    Segmenter,
    validate_edit,
)

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

    def snapshot(self, particle: int | None = None) -> dict[int, dict[str, Any]]: ...

    def remove(self, particle: int) -> None: ...


class EventStage(Protocol):
    """Event detection (implemented by `sam4em_live.hooks.events.EventDetector`)."""

    def update(self, frame_index: int, shape: tuple[int, int], measurements: Sequence[ParticleMeasurement],
               status: Any, stats: dict[int, dict[str, Any]] | None = None) -> list[ServiceEvent]: ...


class FrameProcessor:
    """Runs the per-frame stages and times each of them (milliseconds)."""

    def __init__(
        self,
        segmenter: Segmenter,
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

    def process(self, frame: Frame, edits: Sequence[ParticleEdit], status: Any = None) -> FrameResult:
        t0 = time.perf_counter()
        valid, events = self._validate(frame, edits)
        masks = self._track(frame, valid, events)
        t1 = time.perf_counter()
        measurements = tuple(
            measure_mask(m, frame.index, frame.pixels, self.intensity_weighted_centroid) for m in masks
        )
        t2 = time.perf_counter()
        for edit in valid:
            if isinstance(edit, RemoveParticle) and self.stats is not None:
                self.stats.remove(edit.particle)
        stats: dict[int, dict[str, Any]] = {}
        if self.stats is not None:
            self.stats.update(frame.index, measurements)
            if frame.index % self.stats_every_frames == 0:
                stats = self.stats.snapshot()
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
                "segment": (t1 - t0) * 1e3, "measure": (t2 - t1) * 1e3,
                "stats": (t3 - t2) * 1e3, "events": (t4 - t3) * 1e3,
            },
            processed_s=time.time(),
        )

    def _track(self, frame: Frame, edits: list[ParticleEdit], events: list[ServiceEvent]) -> list[ParticleMask]:
        """Segment; an edit the backend rejects is reported and the frame re-run without it."""
        while True:
            try:
                return self.segmenter.track(frame, edits)
            except PromptError as exc:
                rejected = [e for e in edits if exc.particle is None or e.particle == exc.particle]
                if not rejected:
                    raise
                edits = [e for e in edits if e not in rejected]
                for edit in rejected:
                    self._reject(frame, edit, exc, events)

    def _reject(self, frame: Frame, edit: ParticleEdit, exc: Exception, events: list[ServiceEvent]) -> None:
        self.prompt_errors += 1
        log.warning("prompt for particle %d rejected at frame %d: %s", edit.particle, frame.index, exc)
        events.append(ServiceEvent("prompt_rejected", frame.index, edit.particle, {"reason": str(exc)}))

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
