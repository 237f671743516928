"""A backend in its own process (`SegmenterProcess`): start-up errors, a dead child, the ring, the service.

That it gives the same masks and edits as the in-process stage is in tests/test_segment_stage.py.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from sam4em_live.config import ConfigError, ServiceConfig
from sam4em_live.frames import Frame
from sam4em_live.particles import Prompt
from sam4em_live.segment.process_host import SegmenterProcess, SegmenterProcessError
from sam4em_live.service.builder import build_service
from sam4em_live.service.processor import FrameProcessor
from sam4em_live.sim.video import make_prompts
from sam4em_live.sources.array_source import ArraySource
from tests.embedded_helpers import preset_video


@pytest.fixture(scope="module")
def clip():
    video = preset_video("crossing", 24, seed=1)
    return video.frames, make_prompts(video, frames=(0,))


def test_bad_options_raise_the_backends_own_error() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        SegmenterProcess("embedded", {"bogus": 1})
    with pytest.raises(ConfigError, match="unknown backend"):
        SegmenterProcess("no-such-backend", {})


def test_a_dead_segmentation_process_is_reported_clearly(clip) -> None:
    frames, prompts = clip
    host = SegmenterProcess("embedded", {})
    try:
        host.submit(Frame("clip", 0, time.time(), frames[0]), prompts)
        assert host.collect(None) is not None
        os.kill(host._process.pid, signal.SIGKILL)
        host._process.join(5)
        with pytest.raises(SegmenterProcessError, match=r"gone|died|closed"):  # noqa: PT012 - either call may be the one that notices
            host.submit(Frame("clip", 1, time.time(), frames[1]), [])
            host.collect(None)
    finally:
        host.close()


def _run_service(tmp_path, frames, prompts, own_process: bool) -> pd.DataFrame:
    cfg = ServiceConfig.from_mapping({
        "segmenter": {"backend": "embedded", "own_process": own_process},
        "recorder": {"out_dir": str(tmp_path / ("own" if own_process else "in"))},
        "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"},
    })
    built = build_service(cfg, source=ArraySource(frames), edits=prompts)
    status = built.service.run()
    built.close()
    assert status.frames_processed == len(frames) and status.segmentation_errors == 0
    assert built.run_dir is not None
    return pd.read_csv(built.run_dir / "trajectories.csv")


def test_service_with_the_backend_in_its_own_process_records_the_same_trajectories(tmp_path, clip) -> None:
    frames, prompts = clip
    own = _run_service(tmp_path, frames, prompts, own_process=True)
    inside = _run_service(tmp_path, frames, prompts, own_process=False)
    assert len(own) == len(inside) == len(frames) * len(prompts)
    clock = [c for c in own if "time" in c or c == "t_s"]  # wall-clock stamps of this run
    pd.testing.assert_frame_equal(own.drop(columns=clock), inside.drop(columns=clock))


def test_a_larger_frame_waits_for_the_frames_in_flight_then_gets_a_new_ring(clip) -> None:
    frames, prompts = clip
    stage = SegmenterProcess("embedded", {}, depth=2)
    processor = FrameProcessor(stage)
    try:
        small = Frame("clip", 0, time.time(), frames[0])
        processor.submit(small, prompts)
        assert stage.fits(Frame("clip", 1, time.time(), frames[1]))  # same size: overlaps
        bigger = np.pad(frames[1], ((0, 16), (0, 16)), mode="edge")  # a new series with larger frames
        big = Frame("big", 0, time.time(), bigger)
        assert not stage.fits(big)
        first = processor.collect(None)
        assert first.index == 0 and first.masks
        assert stage.fits(big)
        processor.submit(big, [Prompt(7, 0, prompts[0].points, prompts[0].labels)])
        second = processor.collect(None)
        assert second.frame.shape == bigger.shape and [m.particle for m in second.masks if m.present]
    finally:
        stage.close()
