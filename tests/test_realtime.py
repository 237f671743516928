"""Real-time measures: the worker alone on its CPU during a run (restored after), resident frame buffers."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from sam4em_live.config import ServiceConfig
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sources.array_source import ArraySource
from tests.conftest import disk_video

needs_two_cpus = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                    reason="needs Linux CPU affinity and at least 2 CPUs")


class _AffinityProbe:
    """A sink (runs on the worker thread) noting the worker's CPUs and those of the other threads."""

    def __init__(self) -> None:
        self.worker: set[int] | None = None
        self.others: dict[int, set[int]] = {}

    def open(self, run) -> None:
        pass

    def consume(self, result) -> None:
        me = threading.get_native_id()
        self.worker = os.sched_getaffinity(0)
        self.others = {int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task") if int(t) != me}

    def on_status(self, status) -> None:
        pass

    def close(self) -> None:
        pass


@needs_two_cpus
def test_worker_pinned_alone_then_released(tmp_path) -> None:
    before = os.sched_getaffinity(0)
    cpu = max(before)
    frames, _ = disk_video(n_frames=8)
    cfg = ServiceConfig.from_mapping({
        "segmenter": {"backend": "threshold"}, "recorder": {"out_dir": str(tmp_path)},
        "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"worker_cpu": cpu, "backpressure": "every-frame"},
    })
    probe = _AffinityProbe()
    built = build_service(cfg, source=ArraySource(np.asarray(frames)), edits=[Prompt(1, 0, ((30.0, 40.0),), (1,))],
                          extra_sinks=[probe])
    status = built.service.run()
    built.close()
    assert status.frames_processed == 8
    assert probe.worker == {cpu}
    assert probe.others and all(cpu not in cpus for cpus in probe.others.values())
    assert os.sched_getaffinity(0) == before  # released at teardown


@pytest.mark.skipif(not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6") and not os.path.exists("/lib64/libc.so.6"),
                    reason="glibc only")
def test_large_buffers_are_recycled_on_glibc() -> None:
    from sam4em_live.service.realtime import recycle_large_buffers

    assert recycle_large_buffers() is True
    assert ServiceConfig().pipeline.recycle_frame_buffers is True
