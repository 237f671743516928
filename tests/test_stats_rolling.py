"""Live rolling tMSD equals the batch tMSD over the same window, over long gappy streams."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sam4em_live.particles import ParticleMeasurement
from sam4em_live.sinks.results_schema import statistics_entry
from sam4em_live.stats.msd import tmsd
from sam4em_live.stats.rolling import RollingTrackStats


def _stream(rng: np.random.Generator, n_frames: int, particles: int, p_absent: float, p_dropped: float):
    """Frames (with dropped indices) and per-frame measurements of random walks with big jumps."""
    pos = rng.uniform(0, 500, size=(particles, 2))
    frame = -1
    for _ in range(n_frames):
        frame += 1 + int(rng.random() < p_dropped) * int(rng.integers(1, 4))
        # Occasional huge steps make float add/subtract drift visible if it is not controlled.
        scale = np.where(rng.random((particles, 1)) < 0.01, 1e4, 1.0)
        pos += rng.normal(0, 1.5, size=pos.shape) * scale
        present = rng.random(particles) >= p_absent
        yield frame, [
            ParticleMeasurement(pid + 1, frame, bool(ok), float(x), float(y)) if ok
            else ParticleMeasurement(pid + 1, frame, False)
            for pid, ((x, y), ok) in enumerate(zip(pos, present, strict=True))
        ]


def _batch_over_window(history: dict[int, list[tuple[int, float, float]]], pid: int, latest: int,
                       window: int, max_lag: int):
    rows = [r for r in history[pid] if r[0] > latest - window]
    f, x, y = (np.array(c) for c in zip(*rows, strict=True))
    return tmsd(f, x, y, max_lag=max_lag)


@pytest.mark.parametrize("window,max_lag,p_absent,p_dropped,n_frames,check_every", [
    (64, 10, 0.0, 0.0, 1500, 7),
    (50, 20, 0.2, 0.05, 1500, 7),
    (30, 29, 0.5, 0.2, 1500, 7),
    (16, 40, 0.1, 0.3, 1500, 7),  # max_lag above the window is capped at window - 1
    (300, 100, 0.1, 0.02, 3300, 31),  # the service's max lag over 11 window turnovers
])
def test_rolling_equals_batch_over_long_stream(window, max_lag, p_absent, p_dropped, n_frames, check_every):
    rng = np.random.default_rng(window * 1000 + max_lag)
    stats = RollingTrackStats(window, max_lag, fps=None, pixel_size_nm=None)
    history: dict[int, list[tuple[int, float, float]]] = {}
    effective_lag = min(max_lag, window - 1)
    checked = 0
    for frame, ms in _stream(rng, n_frames, 3, p_absent, p_dropped):
        stats.update(frame, ms)
        for m in ms:
            if m.present:
                history.setdefault(m.particle, []).append((frame, m.x, m.y))
        if frame % check_every and frame < n_frames - 20:
            continue
        for pid in stats.particles():
            live = stats.msd(pid)
            batch = _batch_over_window(history, pid, frame, window, effective_lag)
            assert live.lag_frames.size == effective_lag
            np.testing.assert_array_equal(live.n, batch.n)
            np.testing.assert_allclose(live.msd, batch.msd, rtol=1e-9, atol=0, equal_nan=True)
            checked += 1
    assert checked > 150
    assert max(f for f, _, _ in history[1]) > 10 * window


def test_gaps_make_no_pairs_and_lags_are_frame_differences():
    stats = RollingTrackStats(100, 5, fps=None, pixel_size_nm=None)
    # Particle 1 at frames 0, 1, 3 (absent at 2): lag 2 comes only from (1, 3), lag 3 from (0, 3).
    for frame, x in [(0, 0.0), (1, 1.0), (2, None), (3, 4.0)]:
        present = x is not None
        stats.update(frame, [ParticleMeasurement(1, frame, present, x if present else math.nan, 0.0)])
    m = stats.msd(1)
    assert m.n.tolist() == [1, 1, 1, 0, 0]
    np.testing.assert_allclose(m.msd[:3], [1.0, 9.0, 16.0])


def test_snapshot_is_json_at_the_wire_and_calibrated_units():
    rng = np.random.default_rng(3)
    stats = RollingTrackStats(200, 30, fps=50.0, pixel_size_nm=2.0)
    xy = np.cumsum(rng.normal(0, 1.0, size=(200, 2)), axis=0)
    for f, (x, y) in enumerate(xy):
        stats.update(f, [ParticleMeasurement(7, f, True, float(x), float(y))])
    snap = stats.snapshot()
    json.dumps({pid: statistics_entry(record) for pid, record in snap.items()}, allow_nan=False)
    s = snap[7]
    assert s.frames_seen == 200 and s.frames_in_window == 200 and s.window_frames == 200
    np.testing.assert_allclose(s.lag_s, np.array(s.lag_frames) / 50.0)
    np.testing.assert_allclose(s.msd_nm2, np.array(s.msd_px2) * 4.0)
    # D in nm^2/s^alpha = D_px2_per_frame * p^2 * fps^alpha.
    assert s.D_nm2_per_s == pytest.approx(s.D_px2_per_frame * 4.0 * 50.0 ** s.alpha, rel=1e-12)
    # Unit-step 2-D walk: 4 D = 2 px^2/frame.
    assert s.D_linear_px2_per_frame == pytest.approx(0.5, rel=0.3)
    assert stats.snapshot(particle=99) == {}
    uncalibrated = RollingTrackStats(200, 30, fps=None, pixel_size_nm=None)
    uncalibrated.update(0, [ParticleMeasurement(7, 0, True, 1.0, 1.0)])
    assert uncalibrated.snapshot()[7].lag_s is None and uncalibrated.snapshot()[7].D_nm2_per_s is None


def test_remove_forget_and_order():
    stats = RollingTrackStats(10, 3, fps=None, pixel_size_nm=None)
    stats.update(0, [ParticleMeasurement(1, 0, True, 0.0, 0.0), ParticleMeasurement(2, 0, True, 0.0, 0.0)])
    stats.remove(2)
    stats.remove(42)  # unknown: no error
    assert stats.particles() == [1]
    stats.update(0, [ParticleMeasurement(3, 0, True, 0.0, 0.0)])  # repeated frame: ignored
    assert stats.particles() == [1]
    stats.update(10, [])  # frame 0 leaves the window: particle 1 is forgotten
    assert stats.particles() == []
    stats.update(11, [ParticleMeasurement(1, 11, True, 0.0, 0.0), ParticleMeasurement(1, 11, True, 5.0, 0.0)])
    stats.update(12, [ParticleMeasurement(1, 12, True, 1.0, 0.0)])
    assert stats.msd(1).n[0] == 1 and stats.msd(1).msd[0] == 1.0  # duplicate on frame 11: first kept
    stats.update(3, [ParticleMeasurement(2, 3, True, 0.0, 0.0)])  # index went back: new series
    assert stats.particles() == [2]
    with pytest.raises(ValueError, match="window_frames must be >= 2"):
        RollingTrackStats(1, 1, None, None)


def test_many_particles_grow_storage_and_reuse_rows():
    """More particles than the initial capacity, removals and re-additions: still equal to batch."""
    rng = np.random.default_rng(9)
    window, max_lag = 40, 12
    stats = RollingTrackStats(window, max_lag, fps=None, pixel_size_nm=None)
    history: dict[int, list[tuple[int, float, float]]] = {}
    for frame, ms in _stream(rng, 300, 20, 0.3, 0.0):
        if frame == 150:
            for pid in range(1, 21, 2):
                stats.remove(pid)
                history[pid] = []  # removed particles start afresh
        stats.update(frame, ms)
        for m in ms:
            if m.present:
                history.setdefault(m.particle, []).append((frame, m.x, m.y))
    assert stats.particles() == list(range(1, 21))
    for pid in stats.particles():
        batch = _batch_over_window(history, pid, frame, window, max_lag)
        live = stats.msd(pid)
        np.testing.assert_array_equal(live.n, batch.n)
        np.testing.assert_allclose(live.msd, batch.msd, rtol=1e-9, equal_nan=True)
