"""The service's status: the worker's periodic snapshot, its log line and its delivery to the sinks.

A mixin of `Service` (as `ServiceControlSide` is), so the service module keeps to its threads and state
machine. Called on the worker thread only (`Service._worker_loop`, every ``status_interval_s``, and at
teardown); other threads read the last snapshot through `ServiceControlSide.status`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sam4em_live.control_api import ServiceState, StatusSnapshot

if TYPE_CHECKING:
    import threading

    from sam4em_live.control.quotas import ServiceQuotas
    from sam4em_live.segment.stage import SegmentStage
    from sam4em_live.service.frame_queue import FrameQueue
    from sam4em_live.service.ingest import NonFiniteScreen
    from sam4em_live.service.meter import IntervalMeter
    from sam4em_live.sinks.base import CountingSink, Sink
    from sam4em_live.sources.base import FrameSource

log = logging.getLogger("sam4em_live.service.service")  # the service's log, as before the split


class ServiceStatusSide:
    """The status snapshots of `Service` (which owns every attribute named here)."""

    run_id: str
    source: FrameSource
    stage: SegmentStage
    queue: FrameQueue
    sinks: list[Sink]
    _counting_sinks: list[CountingSink]
    _quotas: ServiceQuotas
    _screen: NonFiniteScreen
    _meter: IntervalMeter
    _status: StatusSnapshot
    _state: ServiceState
    _paused: threading.Event
    _shed_load: bool
    _sinks_open: bool
    _sink_errors: int
    _seg_errors: int
    _processed: int

    def _publish_status(self) -> None:
        self._status = self._snapshot()
        s = self._status
        if self._shed_load and s.live and s.state is ServiceState.STREAMING and s.frames_processed:
            # Live: new particles from clients are admitted only while the worker has room for them (offline,
            # as fast as possible, the worker is always busy and a slower run loses nothing).
            self._quotas.note_worker_load(s.worker_busy, s.particles, s.frames_processed)
        if s.live:
            log.info(
                "%s: cam %.1f fps, proc %.1f fps, latency p50 %.1f / p99 %.1f ms, queue %d, dropped %d, gaps %d, "
                "rejected %d", s.state.value, s.camera_fps, s.processed_fps, s.latency_ms_p50, s.latency_ms_p99,
                s.queue_depth, s.frames_dropped, s.frames_gap, s.messages_rejected,
            )
        else:  # offline: no camera, and the latency would be time spent queued
            log.info("%s: proc %.1f fps, %d frames processed, queue %d, rejected %d", s.state.value,
                     s.processed_fps, s.frames_processed, s.queue_depth, s.messages_rejected)
        status = s.as_dict()
        for sink in self.sinks:
            try:
                sink.on_status(status)
            except Exception:
                self._sink_errors += 1
                log.exception("sink %s failed on status", type(sink).__name__)

    def _snapshot(self, error: str | None = None) -> StatusSnapshot:
        counters = self.source.counters
        backend = self.stage.describe() if self._sinks_open else {}
        rates = self._meter.roll()
        return StatusSnapshot(
            state=self._state, run_id=self.run_id,
            series_id=self.source.series.series_id if self.source.series else None,
            backend=backend.get("backend"), random_weights=bool(backend.get("random_weights", False)),
            frames_received=self._meter.received_total, frames_processed=self._processed,
            frames_dropped=self.queue.dropped, frames_spilled=self.queue.spilled, frames_gap=counters.gaps,
            dropped_by_reason=dict(self.queue.dropped_by_reason), frames_repaired=self._screen.repaired,
            messages_rejected=counters.rejected + self._screen.rejected,
            rejected_by_reason={**counters.rejected_by_reason,
                                **({"non_finite": self._screen.rejected} if self._screen.rejected else {})},
            segmentation_errors=self._seg_errors, sink_errors=self._sink_errors,
            queue_depth=len(self.queue), paused=self._paused.is_set(), error=error,
            particles=tuple(self.stage.particles()), sinks=self._sink_counters(),
            refused_by_quota=self._quotas.refused, wall_time_s=time.time(),
            live=self.source.series.live if self.source.series else True, **rates,
        )

    def _sink_counters(self) -> dict[str, dict[str, int]]:
        """Each `CountingSink`'s counters (copied), keyed by sink class name."""
        return {type(sink).__name__: dict(sink.counters) for sink in self._counting_sinks}
