"""The pipeline benchmark's loss figures (issue 23): whose each dropped frame was, and the landing probe's camera."""

from __future__ import annotations

from tests.frame_loss import Loss
from tools.bench.benchmarks.pipeline import _whose_losses
from tools.bench.benchmarks.pipeline_landing import VirtualCamera

PERIOD_S = 0.005  # a 200 fps camera


def _loss(frame: int, worker_wait_s: float, sent_span_s: float = 8 * PERIOD_S, stolen_s: float = 0.0) -> Loss:
    """A frame dropped 60 ms after its capture while the worker took 6 frames and waited ``worker_wait_s``."""
    return Loss(frame, 0.060, 0.040, 6, worker_wait_s, 0.0, 0.050, stolen_s, sent_span_s, PERIOD_S, 8)


def test_losses_are_the_service_s_unless_the_machine_or_the_camera_explains_them() -> None:
    losses = [_loss(1, 0.001), _loss(2, 0.002), _loss(3, 0.030), _loss(4, 0.001, sent_span_s=0.004),
              _loss(5, 0.030, sent_span_s=0.004)]
    figures = _whose_losses(losses, "landing_")
    assert figures["landing_frames_lost_by_service"].value == 2  # the worker had its cores: too slow itself
    assert figures["landing_frames_lost_by_machine"].value == 2  # waited 30 ms of 60 for a core
    assert figures["landing_frames_lost_by_camera"].value == 1  # the frames behind it came in a burst
    assert figures["landing_frames_lost_by_service"].better == "lower"


def test_time_the_host_took_from_the_vm_counts_as_the_machine_s_as_a_wait_for_a_core_does() -> None:
    # the worker took 6 frames in 60 ms: one frame's time is ~10 ms of the window less what was taken from it
    assert not _loss(1, 0.001, stolen_s=0.002).machine_lost
    assert _loss(2, 0.0, stolen_s=0.012).machine_lost
    assert _loss(3, 0.005, stolen_s=0.006).machine_lost  # the two together
    assert "the host stole 12 ms" in _loss(2, 0.0, stolen_s=0.012).describe()


def test_the_virtual_camera_drops_the_oldest_beyond_the_queue_and_waits_for_frames() -> None:
    camera = VirtualCamera(period_ms=5.0, capacity=3, overhead_ms=0.0)
    assert camera.take() == (0, 0)
    camera.done(0, 22.0)  # frames 1-4 arrive meanwhile: one more than the queue holds
    assert camera.take() == (2, 2) and camera.dropped == [1]
    camera.done(2, 1.0)
    assert camera.take() == (3, 1)
    camera.done(3, 1.0)
    camera.done(*camera.take()[:1], 1.0)  # frame 4; the worker is then idle
    assert camera.take() == (5, 0) and camera.now_ms == 25.0  # it waited for frame 5's capture
    camera.done(5, 100.0, counted=False)  # a frame left off the clock (a prompt's seeding)
    assert camera.now_ms == 25.0 and camera.cost_ms[5] == 0.0
