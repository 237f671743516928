"""EventDetector: per-frame events from measurements and status snapshots."""

from __future__ import annotations

import math

import pytest

from sam4em_live.config import HooksConfig
from sam4em_live.control_api import ServiceState, StatusSnapshot
from sam4em_live.hooks.events import EventDetector, edge_distance
from sam4em_live.particles import ParticleMeasurement
from sam4em_live.results import ParticleStatistics

SHAPE = (100, 200)  # rows, columns


def here(particle: int, frame: int, x: float, y: float) -> ParticleMeasurement:
    return ParticleMeasurement(particle, frame, True, x=x, y=y, area_px=20)


def gone(particle: int, frame: int) -> ParticleMeasurement:
    return ParticleMeasurement(particle, frame, False)


def fitted(alpha: float | None, alpha_err: float | None = None) -> ParticleStatistics:
    """A statistics record with only the fit's exponent filled in."""
    return ParticleStatistics(lag_frames=(1,), lag_s=None, msd_px2=(1.0,), msd_nm2=None, n=(1,), fit_lags=1,
                              window_frames=10, frames_seen=1, frames_in_window=1, alpha=alpha, alpha_err=alpha_err)


def kinds(events) -> list[str]:
    return [e.kind for e in events]


@pytest.mark.parametrize(
    "x, y, distance, edge",
    [(0.0, 50.0, 0.5, "left"), (199.0, 50.0, 0.5, "right"), (100.0, 0.0, 0.5, "top"), (100.0, 97.0, 2.5, "bottom")],
)
def test_edge_distance(x, y, distance, edge) -> None:
    assert edge_distance(x, y, SHAPE) == (distance, edge)


def test_frame_gap_counts_missing_frames() -> None:
    det = EventDetector()
    assert det.update(0, SHAPE, []) == []
    assert det.update(1, SHAPE, []) == []
    events = det.update(5, SHAPE, [])
    assert kinds(events) == ["frame_gap"]
    assert events[0].detail == {"missing": 3, "previous_frame": 1}


def test_near_edge_is_edge_triggered_and_rearms() -> None:
    det = EventDetector(edge_margin_px=10)
    xs = [100, 150, 185, 190, 195, 150, 192]
    fired = [kinds(det.update(i, SHAPE, [here(1, i, x, 50)])) for i, x in enumerate(xs)]
    assert fired == [[], [], [], ["particle_near_edge"], [], [], ["particle_near_edge"]]
    event = det.update(7, SHAPE, [here(1, 7, 50, 95)])
    assert event == []  # still within the margin (now of the bottom edge): no new event


def test_lost_left_field_and_reacquired() -> None:
    det = EventDetector(edge_margin_px=10, lost_after_frames=3)
    det.update(0, SHAPE, [here(1, 0, 195.0, 50.0)])
    frames = {i: kinds(det.update(i, SHAPE, [gone(1, i)])) for i in range(1, 6)}
    assert frames == {1: ["particle_left_field"], 2: [], 3: ["particle_lost"], 4: [], 5: []}
    back = det.update(6, SHAPE, [here(1, 6, 100.0, 50.0)])
    assert kinds(back) == ["particle_reacquired"]
    assert back[0].detail["absent_frames"] == 5


def test_lost_counts_frame_indices_not_calls() -> None:
    det = EventDetector(lost_after_frames=10)
    det.update(0, SHAPE, [here(1, 0, 100.0, 50.0)])
    events = det.update(12, SHAPE, [gone(1, 12)])  # 11 frames missing in between
    assert "particle_lost" in kinds(events) and "frame_gap" in kinds(events)


def test_particle_never_seen_is_not_lost() -> None:
    det = EventDetector(lost_after_frames=2)
    assert all(det.update(i, SHAPE, [gone(3, i)]) == [] for i in range(10))


def test_removed_particle_state_is_dropped() -> None:
    det = EventDetector(lost_after_frames=2)
    det.update(0, SHAPE, [here(1, 0, 100.0, 50.0)])
    det.update(1, SHAPE, [])
    assert det.update(2, SHAPE, [gone(1, 2)]) == []  # re-added later: a fresh particle


def status(t: float, camera: float, processed: float, depth: int = 0, dropped: int = 0) -> StatusSnapshot:
    return StatusSnapshot(ServiceState.STREAMING, camera_fps=camera, processed_fps=processed,
                          queue_depth=depth, frames_dropped=dropped, wall_time_s=t)


def test_processing_slow_then_recovered() -> None:
    det = EventDetector(slow_ratio=0.9)
    assert det.update(0, SHAPE, [], status(1.0, 80.0, 79.0)) == []
    slow = det.update(1, SHAPE, [], status(2.0, 80.0, 40.0))
    assert kinds(slow) == ["processing_slow"]
    assert slow[0].detail["processed_fps"] == 40.0
    assert det.update(2, SHAPE, [], status(2.0, 80.0, 40.0)) == []  # same snapshot: judged once
    assert det.update(3, SHAPE, [], status(3.0, 80.0, 30.0)) == []  # still slow: no repeat
    assert kinds(det.update(4, SHAPE, [], status(4.0, 80.0, 80.0))) == ["processing_recovered"]


def test_processing_slow_from_a_growing_queue_or_drops() -> None:
    det = EventDetector()
    det.update(0, SHAPE, [], status(1.0, 80.0, 80.0, depth=1).as_dict())
    det.update(1, SHAPE, [], status(2.0, 80.0, 80.0, depth=3).as_dict())
    assert kinds(det.update(2, SHAPE, [], status(3.0, 80.0, 80.0, depth=6).as_dict())) == ["processing_slow"]
    det2 = EventDetector()
    det2.update(0, SHAPE, [], status(1.0, 80.0, 80.0, dropped=0))
    assert kinds(det2.update(1, SHAPE, [], status(2.0, 80.0, 80.0, dropped=5))) == ["processing_slow"]


def test_idle_camera_is_not_slow() -> None:
    det = EventDetector()
    assert det.update(0, SHAPE, [], status(1.0, 0.0, 0.0)) == []


def test_alpha_change_optional() -> None:
    det = EventDetector(alpha_change=0.3)
    m = [here(1, 0, 100.0, 50.0)]
    assert det.update(0, SHAPE, m, stats={1: fitted(1.0)}) == []
    assert det.update(1, SHAPE, m, stats={1: fitted(1.2)}) == []
    change = det.update(2, SHAPE, m, stats={1: fitted(0.6)})
    assert kinds(change) == ["alpha_change"] and change[0].detail == {"alpha": 0.6, "previous_alpha": 1.0}
    assert det.update(3, SHAPE, m, stats={1: fitted(math.nan)}) == []
    assert det.update(4, SHAPE, m, stats={1: fitted(None)}) == []  # the fit was undeterminable
    assert det.update(5, SHAPE, m, stats={1: fitted(1.5, 0.5)}) == []  # too uncertain
    assert kinds(det.update(6, SHAPE, m, stats={1: fitted(1.5, 0.1)})) == ["alpha_change"]
    off = EventDetector(alpha_change=0.0)
    off.update(0, SHAPE, m, stats={1: fitted(1.0)})
    assert off.update(1, SHAPE, m, stats={1: fitted(0.1)}) == []


def test_from_config() -> None:
    det = EventDetector.from_config(HooksConfig(edge_margin_px=7, lost_after_frames=4))
    assert (det.edge_margin_px, det.lost_after_frames) == (7, 4)
