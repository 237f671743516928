"""End to end over real loopback sockets: stand-in camera → service → results subscriber + recorder."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import tifffile
import zmq

from sam4em_live.config import ServiceConfig
from sam4em_live.control_api import ServiceState
from sam4em_live.frames import Calibration, SeriesInfo
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sinks.results_schema import rle_decode
from sam4em_live.sources.array_source import ArraySource
from sam4em_live.sources.camera import FramePublisher
from tests.conftest import disk_video
from tests.loopback import ResultsCollector

PROMPTS = [Prompt(1, 0, ((30.0, 40.0),), (1,)), Prompt(2, 0, box=(60.0, 50.0, 80.0, 70.0))]


def _config(tmp_path, endpoint, **over):
    data = {
        "source": {"kind": "zmq", "endpoint": endpoint},
        "segmenter": {"backend": "threshold"},
        "recorder": {"out_dir": str(tmp_path / "runs")},
        "publisher": {"endpoint": "tcp://127.0.0.1:0", "preview_fps": 1000.0},
        "control": {"enabled": False},
        "calibration": {"pixel_size_nm": 2.0, "fps": 50.0},
        "pipeline": {"status_interval_s": 0.2, "backpressure": "every-frame"},
    }
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return ServiceConfig.from_mapping(data)


def _publish(pub, frames, fps=200.0, series="cam"):
    pub.send_series_start(SeriesInfo(series, frames.shape[1:], frames.dtype.str, Calibration(fps=50.0)))
    for i, px in enumerate(frames):
        pub.send_frame(px.copy(), series, i, time.time())
        time.sleep(1 / fps)
    pub.send_series_end(series, len(frames))


def test_camera_to_service_to_subscriber_and_recorder(tmp_path):
    frames, truth = disk_video(n_frames=40)
    camera = FramePublisher("tcp://127.0.0.1:0")
    cfg = _config(tmp_path, camera.endpoint, pipeline={"backpressure": "every-frame"})
    built = build_service(cfg, edits=PROMPTS, stop_at_series_end=True)
    collector = ResultsCollector(built.publisher.endpoint)
    built.service.start()
    time.sleep(0.5)  # let SUB sockets join
    _publish(camera, frames)
    assert built.service.wait(10), "service did not stop at series end"
    collector.close()
    camera.close()
    assert built.service.error is None and built.service.state is ServiceState.STOPPED

    results = collector.of(b"result")
    assert [r["frame"] for r in results] == list(range(40))
    for r in results:
        by_id = {p["id"]: p for p in r["particles"]}
        for pid in (1, 2):
            p = by_id[pid]
            assert abs(p["x"] - truth[r["frame"], pid - 1, 0]) < 0.5
            assert abs(p["y"] - truth[r["frame"], pid - 1, 1]) < 0.5
            x0, y0, x1, y1 = p["bbox"]
            assert rle_decode(p["mask_rle"], (y1 - y0, x1 - x0)).sum() == p["area_px"]
    assert collector.of(b"status"), "no status published"
    assert any(r["stats"] for r in results), "no rolling statistics published"

    run_dir = built.run_dir
    table = pd.read_csv(run_dir / "trajectories.csv")
    assert len(table) == 80 and set(table.particle) == {1, 2}
    p1 = table[table.particle == 1].sort_values("frame")
    np.testing.assert_allclose(p1.x, truth[:, 0, 0], atol=0.5)
    np.testing.assert_allclose(p1.x_nm, p1.x * 2.0)
    np.testing.assert_allclose(p1.t_s, p1.frame / 50.0)
    labels = tifffile.imread(run_dir / "masks.tif")
    assert labels.shape == (40, 96, 128) and set(np.unique(labels)) == {0, 1, 2}
    _ys, xs = np.nonzero(labels[10] == 2)
    assert abs(xs.mean() - truth[10, 1, 0]) < 0.5


def test_stop_mid_run_leaves_readable_files(tmp_path):
    frames, _ = disk_video(n_frames=400, velocity=(0.05, 0.02))
    cfg = _config(tmp_path, "tcp://127.0.0.1:0", publisher={"enabled": False})
    built = build_service(cfg, source=ArraySource(frames, delay_s=0.005), edits=PROMPTS)
    built.service.start()
    time.sleep(0.6)
    t0 = time.monotonic()
    built.service.stop()
    assert time.monotonic() - t0 < 2.0
    n = built.service.status().frames_processed
    assert 0 < n < 400
    table = pd.read_csv(built.run_dir / "trajectories.csv")
    assert table.frame.max() == n - 1 and len(table) == 2 * n
    np.testing.assert_allclose(table.t_s, table.frame / 50.0)  # config calibration wins
    assert tifffile.imread(built.run_dir / "masks.tif").shape[0] == n


def test_every_frame_policy_processes_all_frames_even_when_slow(tmp_path):
    frames, _ = disk_video(n_frames=60)
    cfg = _config(tmp_path, "tcp://127.0.0.1:0", publisher={"enabled": False},
                  pipeline={"backpressure": "every-frame", "queue_frames": 2})
    built = build_service(cfg, source=ArraySource(frames), edits=PROMPTS)
    status = built.service.run()
    assert status.frames_processed == 60 and status.frames_dropped == 0 and status.frames_spilled > 0


def test_bad_prompt_is_reported_not_fatal(tmp_path):
    frames, _ = disk_video(n_frames=10)
    cfg = _config(tmp_path, "tcp://127.0.0.1:0", publisher={"enabled": False})
    bad = Prompt(3, 2, ((500.0, 5.0),), (1,))
    built = build_service(cfg, source=ArraySource(frames), edits=[*PROMPTS, bad])
    status = built.service.run()
    assert status.frames_processed == 10 and built.service.processor.prompt_errors == 1
    events = (built.run_dir / "events.jsonl").read_text()
    assert "prompt_rejected" in events and "outside" in events


@pytest.mark.parametrize("policy", ["latest", "every-frame"])
def test_pause_and_resume(tmp_path, policy):
    frames, _ = disk_video(n_frames=200, velocity=(0.05, 0.02))
    cfg = _config(tmp_path, "tcp://127.0.0.1:0", publisher={"enabled": False}, pipeline={"backpressure": policy})
    built = build_service(cfg, source=ArraySource(frames, delay_s=0.003), edits=PROMPTS)
    built.service.start()
    time.sleep(0.2)
    built.service.pause()
    assert built.service.state is ServiceState.PAUSED
    time.sleep(0.2)
    n_paused = built.service._processed
    time.sleep(0.2)
    assert built.service._processed == n_paused
    built.service.resume()
    assert built.service.wait(10)
    processed = built.service.status().frames_processed
    assert processed > n_paused
    if policy == "every-frame":
        assert processed == 200


def test_backend_prompt_rejection_drops_only_that_edit(tmp_path):
    """A prompt the backend cannot seed (on background) is reported; the other particles still start."""
    frames, _ = disk_video(n_frames=6)
    cfg = _config(tmp_path, "tcp://127.0.0.1:0", publisher={"enabled": False})
    on_background = Prompt(3, 0, ((110.0, 10.0),), (1,))
    built = build_service(cfg, source=ArraySource(frames), edits=[PROMPTS[0], on_background, PROMPTS[1]])
    status = built.service.run()
    assert status.frames_processed == 6 and status.segmentation_errors == 0
    assert status.particles == (1, 2)
    table = pd.read_csv(built.run_dir / "trajectories.csv")
    assert len(table) == 12
    assert "no dark particle" in (built.run_dir / "events.jsonl").read_text()


def test_absent_subscriber_never_slows_and_sink_counters_are_reported(tmp_path):
    """A subscriber that connects and never reads: the pipeline still processes every frame."""
    frames, _ = disk_video(n_frames=300, velocity=(0.05, 0.02))
    cfg = _config(tmp_path, "tcp://127.0.0.1:0", publisher={"sndhwm_messages": 5})
    built = build_service(cfg, source=ArraySource(frames), edits=PROMPTS)
    stuck = zmq.Context.instance().socket(zmq.SUB)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.connect(built.publisher.endpoint)
    try:
        status = built.service.run()
    finally:
        stuck.close(linger=0)
    assert status.frames_processed == 300
    pub = status.sinks["ResultsPublisher"]
    assert pub["sent"] + pub["send_errors"] >= 300
    assert status.sinks["Recorder"]["results_lost"] == 0
