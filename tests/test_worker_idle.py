"""The service's one "the worker holds a frame" signal (`service/worker_idle.py`), which the seeding helper and the
discovery detector wait on: busy from the moment the worker takes a frame until its sinks have the result (a frame
the backend fails on included), idle only when no frame waited behind the last one taken; a side thread's wait is bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from sam4em_live.config import ServiceConfig
from sam4em_live.frames import Frame
from sam4em_live.particles import ParticleEdit, ParticleMask, Prompt
from sam4em_live.segment.stage import InProcessSegmentStage
from sam4em_live.segment.threshold import ThresholdSegmenter
from sam4em_live.service.service import Service
from sam4em_live.service.worker_idle import WorkerIdle
from sam4em_live.sources.array_source import ArraySource
from tests.conftest import disk_video


def test_idle_only_with_no_frame_held_and_none_waiting() -> None:
    worker = WorkerIdle()
    assert worker.idle and worker.wait(1.0)
    worker.took()
    worker.took(2)  # a segmentation process: two frames in flight, and two more wait in the queue
    worker.delivered()
    assert not worker.idle and worker.held == 1
    worker.delivered()  # the last one delivered, but two frames waited behind it
    assert not worker.idle and worker.held == 0 and worker.behind == 1  # behind its camera once
    started = time.perf_counter()
    assert not worker.wait(0.05)  # bounded: a side thread goes on after its timeout
    assert 0.04 <= time.perf_counter() - started < 1.0
    worker.took(0)
    worker.delivered()
    assert worker.idle and worker.behind == 1


def test_a_waiting_side_thread_goes_on_when_the_worker_delivers() -> None:
    worker = WorkerIdle()
    worker.took()
    seen: list[bool] = []
    side = threading.Thread(target=lambda: seen.append(worker.wait(10.0)))
    started = time.perf_counter()
    side.start()
    time.sleep(0.05)
    assert not seen  # still waiting while the worker holds its frame
    worker.delivered()
    side.join(5.0)
    assert seen == [True] and time.perf_counter() - started < 5.0
    worker.took()  # the worker went idle and took its next frame before the side thread looked again:
    assert not worker.idle  # `idle` says busy, but the wait said idle, and that is what a side thread goes by


class _SeesTheWorker(ThresholdSegmenter):
    """The threshold backend noting, at each frame, whether the service's worker counted as idle; fails on one frame."""

    def __init__(self, bad_frame: int) -> None:
        super().__init__()
        self.bad_frame = bad_frame
        self.worker: WorkerIdle | None = None
        self.idle_while_tracking: list[bool] = []

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = ()) -> list[ParticleMask]:
        assert self.worker is not None
        self.idle_while_tracking.append(self.worker.idle)
        if frame.index == self.bad_frame:
            raise ValueError("cannot segment this frame")
        return super().track(frame, edits)


class _SinkSeesTheWorker:
    """A sink noting whether the worker counted as idle while it consumed each result."""

    def __init__(self) -> None:
        self.worker: WorkerIdle | None = None
        self.idle_while_consuming: list[bool] = []

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        assert self.worker is not None
        self.idle_while_consuming.append(self.worker.idle)

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("backpressure", ["latest", "every-frame"])
def test_the_worker_is_busy_from_taking_a_frame_until_its_sinks_have_it(backpressure: str) -> None:
    frames, _ = disk_video(n_frames=8)
    backend = _SeesTheWorker(bad_frame=3)
    config = ServiceConfig.from_mapping({"recorder": {"enabled": False}, "publisher": {"enabled": False},
                                         "pipeline": {"backpressure": backpressure}})
    prompt = Prompt(1, 0, ((float(frames.shape[2]) / 2, float(frames.shape[1]) / 2),), (1,))
    sink = _SinkSeesTheWorker()
    service = Service(config, ArraySource(frames, delay_s=0.01), InProcessSegmentStage(backend), [sink],
                      edits=[prompt])
    backend.worker = sink.worker = service.worker_idle
    status = service.run()
    assert status.frames_processed == len(sink.idle_while_consuming) >= 4
    assert backend.idle_while_tracking and not any(backend.idle_while_tracking)
    assert not any(sink.idle_while_consuming)  # delivered only after the sinks
    assert service.worker_idle.held == 0 and service.worker_idle.idle  # the failed frame too
