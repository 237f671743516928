"""The streaming service: ingest thread → FrameQueue → worker → sinks.

`Service.run()` blocks until the source ends or `stop()` is called; `start()`
runs it on a thread. Errors from the ingest thread are carried back to the
worker and re-raised from `run()` after teardown, which always runs.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING

from sam4em_live.control.quotas import ServiceQuotas
from sam4em_live.control_api import ServiceState, StatusSnapshot
from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.results import FrameResult, RunInfo
from sam4em_live.segment.stage import InProcessSegmentStage, SegmentStage, SegmentStageError
from sam4em_live.service.control_side import ServiceControlSide
from sam4em_live.service.discovery import Discovery
from sam4em_live.service.edits import EditInbox
from sam4em_live.service.frame_queue import FrameQueue
from sam4em_live.service.ingest import NonFiniteScreen
from sam4em_live.service.meter import IntervalMeter
from sam4em_live.service.particle_ids import ParticleIds
from sam4em_live.service.processor import EventStage, FrameProcessor, StatsStage
from sam4em_live.service.realtime import isolate_current_thread, recycle_large_buffers, release_all
from sam4em_live.service.seeding import SeedingLane
from sam4em_live.service.state import check_transition
from sam4em_live.service.status_side import ServiceStatusSide
from sam4em_live.service.worker_idle import WorkerIdle
from sam4em_live.sinks.base import AnnotationSink, CountingSink, Sink, require_sink
from sam4em_live.sources.base import EndOfStream, FrameSource
from sam4em_live.versions import package_versions

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sam4em_live.config import ServiceConfig
    from sam4em_live.particles import ParticleEdit

log = logging.getLogger(__name__)

POLL_S = 0.05  # every wait is at most this long, so stop() is honoured within ~100 ms
#: Longest wait for one frame from a segmentation process before the run is failed (sam2 on CPU is slow).
COLLECT_TIMEOUT_S = 300.0


def new_run_id() -> str:
    """A sortable, unique run id: local start time plus six hex digits."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Service(ServiceControlSide, ServiceStatusSide):
    """Owns the threads and the state machine: `ServiceControl` in `ServiceControlSide`, status in `ServiceStatusSide`."""

    def __init__(
        self,
        config: ServiceConfig,
        source: FrameSource,
        stage: SegmentStage,
        sinks: Sequence[Sink] = (),
        edits: Sequence[ParticleEdit] = (),
        stats_factory: Callable[[Calibration], StatsStage] | None = None,
        events: EventStage | None = None,
        run_id: str | None = None,
        max_frames: int | None = None,
    ) -> None:
        if not isinstance(stage, SegmentStage):
            raise TypeError(f"{type(stage).__name__} is not a SegmentStage (wrap a Segmenter in InProcessSegmentStage)")
        self.config = config
        self.source = source
        self.stage = stage
        self.sinks: list[Sink] = []
        self._counting_sinks: list[CountingSink] = []
        self._annotation_sinks: list[AnnotationSink] = []
        self._use_sinks(sinks)  # raises TypeError on anything that is not a Sink
        self.run_id = run_id or new_run_id()
        self.max_frames = max_frames
        self._quotas = ServiceQuotas(config.quotas)  # edits (through the inbox) and annotations
        self.edits = EditInbox(edits, self._quotas)
        self.ids = ParticleIds(edit.particle for edit in edits)  # the service owns particle ids (issue 21)
        # Whether the worker holds a frame: the seeding helper and the detector wait for it (service/worker_idle.py)
        self.worker_idle = WorkerIdle()
        # docs/discovery.md: the detector runs on its own thread; every-frame runs wait for it (lockstep)
        self.discovery = Discovery(config.discovery, self.ids, self.submit_edit,
                                   lockstep=config.pipeline.backpressure != "latest", worker=self.worker_idle)
        # Statistics need the series calibration (fps, pixel size), known only at the first frame:
        # the processor that owns them is built then (`_new_processor`).
        self._stats_factory = stats_factory
        self._events = events
        self.processor: FrameProcessor | None = None
        self.queue = FrameQueue(config.pipeline.backpressure, config.pipeline.queue_frames, config.pipeline.spill_dir)
        self._screen = NonFiniteScreen(config.pipeline.max_non_finite_fraction)  # ingest thread only
        self._state = ServiceState.IDLE
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._ingest_done = threading.Event()
        self._ingest_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._sinks_open = False
        self._sink_errors = 0
        self._seg_errors = 0
        self._processed = 0
        self._submitted = 0
        self._cpus_before_pinning: set[int] | None = None
        # Backends may defer non-essential work while frames queue up, but only in live mode: every-frame
        # (offline, replay) results must not depend on timing.
        self._shed_load = config.pipeline.backpressure == "latest"
        self._status = StatusSnapshot(ServiceState.IDLE, run_id=self.run_id)
        self._frame_shape: tuple[int, int] | None = None  # of the last frame submitted (rows, cols)
        self._last_progress_s = time.monotonic()  # when the worker last finished a frame (or started)
        self._meter = IntervalMeter()
        self.last_result: FrameResult | None = None
        self.error: BaseException | None = None  # what ended a `start()`ed run, if it failed

    def _use_sinks(self, sinks: Sequence[Sink]) -> None:
        """Check each sink (`require_sink`: TypeError naming a bad one) and sort it once by optional feature."""
        # New lists, never mutated: annotate() reads them from other threads.
        self.sinks = [require_sink(sink) for sink in sinks]
        self._counting_sinks = [sink for sink in sinks if isinstance(sink, CountingSink)]
        self._annotation_sinks = [sink for sink in sinks if isinstance(sink, AnnotationSink)]

    # ---------------------------------------------------------------- state

    @property
    def state(self) -> ServiceState:
        return self._state

    def _set_state(self, new: ServiceState) -> None:
        with self._state_lock:
            check_transition(self._state, new)
            log.info("service %s -> %s", self._state.value, new.value)
            self._state = new

    # ---------------------------------------------------------------- running

    def start(self) -> threading.Thread:
        """Run in a background thread (errors are kept in ``self.error``)."""

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=target, name="sam4em-service", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def finish(self, log_every_s: float = 5.0) -> None:
        """`stop`, then wait for the whole teardown (sinks closed, run.json final), logging while it lasts.

        A process that exits before this returns leaves its run folder unfinished (``running``): the
        commands call this, not ``stop`` with its time limit, before they close and exit.
        """
        self.stop(timeout_s=log_every_s)
        while not self.wait(log_every_s):
            log.warning("stopping: still finishing the run (recording, sinks); waiting so run.json says what the "
                        "files hold (interrupt again to abandon it)")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for a `start()`ed service to finish; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def run(self) -> StatusSnapshot:
        self._set_state(ServiceState.STARTING)
        # The ingest thread hands off the GIL at every receive; with CPython's default 5 ms switch
        # interval a busy worker makes each hand-off wait up to 5 ms and ingest falls behind the camera.
        previous_switch_s = sys.getswitchinterval()
        sys.setswitchinterval(self.config.pipeline.gil_switch_interval_s)
        try:
            return self._run()
        finally:
            sys.setswitchinterval(previous_switch_s)

    def _run(self) -> StatusSnapshot:
        ingest = threading.Thread(target=self._ingest_loop, name="sam4em-ingest", daemon=True)
        if self.config.pipeline.recycle_frame_buffers:
            recycle_large_buffers()
        package_versions()  # read now (~30 ms of package metadata), not when the first frame opens the sinks
        # Everything alive now (modules, model, sources, sinks) lives as long as the run. Freezing it takes it
        # out of the cyclic collector's full passes, which otherwise walk it all and stall the worker mid-stream
        # (a 37 ms pause measured at 200 fps; see docs/benchmarks.md). No collection first: in a large process
        # that alone can take a second; garbage frozen now is collected after the run (gc.unfreeze).
        gc.freeze()
        try:
            self.source.open()
            ingest.start()
            self._set_state(ServiceState.STREAMING)
            if self._paused.is_set():  # pause() arrived while starting
                self._set_state(ServiceState.PAUSED)
            self._worker_loop()
            if self._ingest_error is not None:
                raise self._ingest_error
        except BaseException as exc:
            self._status = self._snapshot(error=f"{type(exc).__name__}: {exc}")
            self._set_state(ServiceState.ERRORED)
            log.exception("service failed")
            self._teardown(ingest)
            raise
        self._set_state(ServiceState.STOPPING)
        self._teardown(ingest)
        return self._status

    def _ingest_loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    frame = self.source.next_frame(POLL_S)
                except EndOfStream:
                    break
                if frame is not None:
                    admitted = self._screen.admit(frame)  # NaN/inf pixels: repaired, or the frame rejected
                    if admitted is not None:
                        # Counted once, where it ends: received (then processed, dropped or spilled) or
                        # rejected (`messages_rejected`, reason non_finite), never both.
                        self._meter.received_total += 1  # single writer: this thread
                        self.queue.put(admitted)  # never raises: a failed spill is a counted drop
        except BaseException as exc:
            self._ingest_error = exc
        finally:
            self._ingest_done.set()

    def _worker_loop(self) -> None:
        next_status = time.monotonic() + self.config.pipeline.status_interval_s
        try:
            while not self._stop.is_set():
                if self._ingest_error is not None:
                    return
                now = time.monotonic()
                if now >= next_status:
                    self._publish_status()
                    next_status = now + self.config.pipeline.status_interval_s
                if self._paused.is_set():
                    self._finish_in_flight()
                    paused_since = time.monotonic()
                    self._stop.wait(POLL_S)
                    self._meter.waited(time.monotonic() - paused_since)  # paused is not busy
                    continue
                # With frames in flight (a segmentation process), only take a frame that is already waiting.
                waiting_since = time.monotonic()
                frame = self.queue.get(0.0 if self.stage.in_flight else POLL_S)
                self._meter.waited(time.monotonic() - waiting_since)
                if frame is not None:
                    self._submit(frame)
                # Finish the oldest frame unless the next can overlap with it: a backend in its own process
                # segments frame N+1 while this thread measures, records and publishes frame N.
                while self.stage.in_flight and (frame is None or self.stage.in_flight >= self.stage.depth):
                    self._collect()
                if (frame is None and not self.stage.in_flight
                        and self._ingest_done.is_set() and len(self.queue) == 0):
                    return
                if self.max_frames is not None and self._submitted >= self.max_frames:
                    return
        finally:
            self._finish_in_flight()  # frames already segmenting are delivered, never lost

    def _submit(self, frame: Frame) -> None:
        if not self._sinks_open:
            self._open_sinks(frame)
        processor = self.processor
        assert processor is not None  # built with the sinks at the first frame
        self._frame_shape = frame.shape
        self.worker_idle.took(len(self.queue))  # until delivered: the side threads hold back
        if self.discovery.enabled:  # before the frame's edits: an auto-added particle starts on this frame
            self.discovery.on_frame(frame, processor.last_measurements, self.stage.particles())
        edits, refused = self.edits.due(frame.index, frame.shape, self.stage.particles)
        self._submitted += 1
        backlog = len(self.queue) if self._shed_load else None
        if not self.stage.fits(frame):  # e.g. a larger frame (new series) for a segmentation process
            self._finish_in_flight()
        try:
            processor.submit(frame, edits, backlog, refused)
        except SegmentStageError:
            raise
        except Exception:
            self._seg_errors += 1
            log.exception("segmentation failed on frame %d; continuing", frame.index)
            self.worker_idle.delivered()  # never in flight: the worker is done with it

    def _collect(self) -> None:
        """Wait for the oldest frame in flight and deliver it to the sinks."""
        processor = self.processor
        assert processor is not None  # something was submitted
        deadline = time.monotonic() + COLLECT_TIMEOUT_S
        try:
            result = processor.collect(POLL_S, self._status)
            while result is None:
                if time.monotonic() > deadline:
                    raise SegmentStageError(f"no segmentation result in {COLLECT_TIMEOUT_S:.0f} s")
                result = processor.collect(POLL_S, self._status)
        except SegmentStageError:
            raise
        except Exception:
            self._seg_errors += 1
            log.exception("segmentation failed; continuing")
            self.worker_idle.delivered()  # nothing to deliver: the worker is done with the frame
            return
        self._deliver(result)
        self._upkeep()
        self.worker_idle.delivered()  # after the sinks: they are the worker's work too

    def _upkeep(self) -> None:
        """The backend's work that the frame's masks did not wait for (`DefersUpkeep`: map updates, learning).

        After the sinks, so it is not in the frame's latency (issue 23: it set the p99 at an 80 fps camera);
        before `WorkerIdle.delivered`, so the side threads still hold back while it runs. A backend in its own
        process runs it at its next frame.
        """
        if not isinstance(self.stage, InProcessSegmentStage):
            return
        try:
            self.stage.upkeep()
        except Exception:
            self._seg_errors += 1
            log.exception("the backend's upkeep after the last frame failed; continuing")

    def _finish_in_flight(self) -> None:
        while self.stage.in_flight:
            self._collect()

    def _deliver(self, result: FrameResult) -> None:
        result = self.discovery.annotate_result(result)  # its decisions become events of this result
        for sink in self.sinks:
            try:
                sink.consume(result)
            except Exception:
                self._sink_errors += 1
                log.exception("sink %s failed on frame %d; continuing", type(sink).__name__, result.index)
        self._processed += 1
        self._last_progress_s = time.monotonic()
        self.last_result = result
        self._meter.record(result, time.time() - result.frame.timestamp_s)

    def _new_processor(self, calibration: Calibration) -> FrameProcessor:
        """The run's processor, built at its first frame: the statistics need the series calibration."""
        stats = self._stats_factory(calibration) if self._stats_factory is not None else None
        # Live: prompts are seeded beside the loop so a click never stalls the stream (service/seeding.py).
        seeder = self.stage.seeds_aside if self._shed_load else None
        return FrameProcessor(self.stage, stats, self._events, self.config.stats.publish_every_frames,
                              self.config.pipeline.intensity_weighted_centroid,
                              SeedingLane(seeder, self.worker_idle) if seeder is not None else None)

    def _open_sinks(self, frame: Frame) -> None:
        series = self.source.series or SeriesInfo(frame.series_id, frame.shape, frame.pixels.dtype.str, frame.calibration)
        self.processor = self._new_processor(series.calibration.merged(frame.calibration))
        run = RunInfo(self.run_id, series, self.stage.describe(), self.config.to_jsonable(), package_versions())
        opened: list[Sink] = []
        for sink in self.sinks:
            try:
                sink.open(run)
                opened.append(sink)
            except Exception:
                # A sink that cannot open (disk full, port taken) must not stop tracking.
                self._sink_errors += 1
                log.exception("sink %s failed to open; running without it", type(sink).__name__)
        self._use_sinks(opened)
        self._sinks_open = True
        self._last_progress_s = time.monotonic()  # the stall clock starts with the first frame
        gc.freeze()  # and what the sinks and the first frame's prompts just built (no collection: cheap)
        if self.config.pipeline.worker_cpu is not None:  # after the sinks have started their threads
            self._cpus_before_pinning = isolate_current_thread(self.config.pipeline.worker_cpu)

    def _teardown(self, ingest: threading.Thread) -> None:
        self._stop.set()
        if ingest.is_alive():
            ingest.join(5.0)
        self._status = self._snapshot(error=self._status.error)
        for sink in self.sinks:
            try:
                if self._sinks_open:
                    sink.on_status(self._status.as_dict())
                sink.close()
            except Exception:
                log.exception("sink %s failed to close", type(sink).__name__)
        if self.processor is not None:
            self.processor.close()  # the seeding lane's helper thread
        for closer in (self.discovery.close, self.stage.close, self.source.close, self.queue.close):
            try:
                closer()
            except Exception:
                log.exception("teardown step failed")
        gc.unfreeze()  # the run's objects may now be collected normally
        if self._cpus_before_pinning is not None:
            release_all(self._cpus_before_pinning)
        self._set_state(ServiceState.STOPPED)
