"""What clients and hooks may do to a running service (`ServiceControl`, `DiscoveryControl`).

The calls come from other threads (the control channel, hooks, the monitor): they read the worker's last
status snapshot and hand edits to the `EditInbox`, never the worker's own state. A mixin of `Service`, so
the service module keeps to its threads and state machine.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from sam4em_live.control_api import ServiceState, StatusSnapshot
from sam4em_live.particles import ParticleEdit, PromptError

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from sam4em_live.config import ServiceConfig
    from sam4em_live.control.quotas import ServiceQuotas
    from sam4em_live.results import FrameResult
    from sam4em_live.segment.stage import SegmentStage
    from sam4em_live.service.discovery import Discovery
    from sam4em_live.service.edits import EditInbox
    from sam4em_live.service.frame_queue import FrameQueue
    from sam4em_live.service.particle_ids import ParticleIds
    from sam4em_live.service.processor import FrameProcessor
    from sam4em_live.sinks.base import AnnotationSink
    from sam4em_live.sources.base import FrameSource

#: The worker is reported stalled when it has finished no frame for this many status intervals while frames wait.
STALL_INTERVALS = 2.0


class ServiceControlSide:
    """The `ServiceControl` and `DiscoveryControl` calls of `Service` (which owns every attribute named here)."""

    config: ServiceConfig
    source: FrameSource
    stage: SegmentStage
    queue: FrameQueue
    edits: EditInbox
    ids: ParticleIds
    discovery: Discovery
    processor: FrameProcessor | None
    last_result: FrameResult | None
    _quotas: ServiceQuotas
    _status: StatusSnapshot
    _state: ServiceState
    _paused: threading.Event
    _frame_shape: tuple[int, int] | None
    _last_progress_s: float
    _annotation_sinks: Sequence[AnnotationSink]

    def _set_state(self, new: ServiceState) -> None:
        raise NotImplementedError  # Service's own

    # ---------------------------------------------------------------- ServiceControl

    def submit_edit(self, edit: ParticleEdit) -> None:
        """Queue ``edit`` after the quotas (`ServiceQuotas.admit_edit`): a box is clipped to the frame.

        A refusal raises (`PromptError`, `QuotaExceeded`) and is reported as a
        ``prompt_rejected`` event on the next frame; nothing is queued.
        """
        if edit.particle < 1:
            raise PromptError(f"particle id must be >= 1, got {edit.particle}")
        self.ids.note(edit.particle)  # a client's own id is never allocated to another particle
        series = self.source.series
        shape = self._frame_shape or (series.shape if series is not None else None)
        # the worker's last snapshot of the particles: stage.particles() is not thread-safe; the last result's
        # present masks say where they are (a new particle prompted on one of them displaces it)
        last = self.last_result
        placed = [(m.particle, m.bbox) for m in last.masks if m.present and m.bbox is not None] if last else []
        self.edits.submit(edit, shape, set(self._status.particles), placed)

    def pause(self) -> None:
        self._paused.set()
        if self._state is ServiceState.STREAMING:
            self._set_state(ServiceState.PAUSED)

    def resume(self) -> None:
        self._last_progress_s = time.monotonic()  # a pause is not a stall
        self._paused.clear()
        if self._state is ServiceState.PAUSED:
            self._set_state(ServiceState.STREAMING)

    def status(self) -> StatusSnapshot:
        """The worker's last snapshot, with its age and the worker's stall as of now (see `StatusSnapshot`)."""
        snapshot = self._status
        now = time.monotonic()
        waiting = len(self.queue) > 0 or self.stage.in_flight > 0
        busy = self._state is ServiceState.STREAMING and waiting and not self._paused.is_set()
        stalled_s = now - self._last_progress_s if busy else 0.0
        limit_s = STALL_INTERVALS * self.config.pipeline.status_interval_s
        age_s = max(time.time() - snapshot.wall_time_s, 0.0) if snapshot.wall_time_s else 0.0
        return dataclasses.replace(snapshot, snapshot_age_s=age_s, worker_stalled_s=stalled_s,
                                   stalled=stalled_s > limit_s, refused_by_quota=self._quotas.refused)

    def describe_config(self) -> dict[str, Any]:
        return self.config.to_jsonable()

    def particles(self) -> list[dict[str, Any]]:
        processor = self.processor
        last = dict(processor.last_measurements) if processor is not None else {}
        out = []
        for pid in self.stage.particles():
            m = last.get(pid)
            out.append({"id": pid, "present": bool(m and m.present), "frame": m.frame if m else None,
                        "x": m.x if m and m.present else None, "y": m.y if m and m.present else None,
                        "angle_deg": m.angle_deg if m and m.present else None})
        return out

    def annotate(self, text: str) -> None:
        self._quotas.admit_annotation(text)  # QuotaExceeded beyond the size or rate limit
        frame = self.last_result.index if self.last_result else None
        for sink in self._annotation_sinks:
            sink.annotate(text, frame)

    # ---------------------------------------------------------------- DiscoveryControl (docs/discovery.md)

    def new_particle_id(self) -> int:
        return self.ids.allocate()

    def proposals(self) -> list[dict[str, Any]]:
        return self.discovery.proposals()

    def accept(self, proposals: Sequence[int], particle: int | None = None) -> list[dict[str, int]]:
        return self.discovery.accept(proposals, particle)

    def reject(self, proposals: Sequence[int]) -> list[int]:
        return self.discovery.reject(proposals)

    def accept_all(self) -> list[dict[str, int]]:
        return self.discovery.accept_all()
