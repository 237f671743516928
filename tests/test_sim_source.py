"""The simulator as a FrameSource: pacing, end of stream, stage moves, truth of the last frame."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sam4em_live.sim.presets import get_preset
from sam4em_live.sim.source import SimulatedSource
from sam4em_live.sim.video import simulate_video
from sam4em_live.sources.base import EndOfStream, FrameSource


def _drain(source: SimulatedSource, limit: int = 1000) -> list:
    frames = []
    while len(frames) < limit:
        try:
            frame = source.next_frame(0.1)
        except EndOfStream:
            break
        if frame is not None:
            frames.append(frame)
    return frames


def test_fast_source_matches_the_clip_and_ends() -> None:
    source = SimulatedSource("crossing", seed=3, n_frames=5, as_fast_as_possible=True)
    assert isinstance(source, FrameSource)
    with pytest.raises(RuntimeError, match="open"):
        source.next_frame(0.01)
    source.open()
    frames = _drain(source)
    video = simulate_video(get_preset("crossing"), 5, seed=3)
    assert [f.index for f in frames] == list(range(5))
    for f, expected in zip(frames, video.frames, strict=True):
        np.testing.assert_array_equal(f.pixels, expected)
    series = source.series
    assert series is not None and series.metadata["simulated"] is True
    assert series.metadata["preset"] == "crossing" and series.metadata["seed"] == 3
    assert series.dtype == frames[0].pixels.dtype.str and series.shape == (256, 256)
    assert frames[0].calibration.pixel_size_nm == 1.0 and frames[0].calibration.fps == 80.0
    assert source.counters.frames == 5 and source.counters.series_ended == 1
    source.close()
    source.close()


def test_paced_source_keeps_its_rate_and_polls() -> None:
    source = SimulatedSource("leave-reenter", seed=0, n_frames=6, fps=50.0)
    source.open()
    start = time.monotonic()
    frames = _drain(source)
    elapsed = time.monotonic() - start
    assert len(frames) == 6 and elapsed >= 5 / 50.0 * 0.9
    assert frames[0].calibration.fps == 80.0  # physical rate of the simulated motion, not playback
    assert source.series.metadata["playback_fps"] == 50.0
    slow = SimulatedSource("leave-reenter", fps=2.0)
    slow.open()
    assert slow.next_frame(0.05) is not None  # first frame is due at once
    t0 = time.monotonic()
    assert slow.next_frame(0.05) is None  # next one is 0.5 s away: give control back
    assert time.monotonic() - t0 < 0.3


def test_move_stage_shifts_the_field_of_view() -> None:
    spec = get_preset("crossing")
    source = SimulatedSource(spec, seed=0, as_fast_as_possible=True)
    source.open()
    source.next_frame(0.1)
    before = {r["particle"]: (r["x"], r["y"]) for r in source.last_truth.truth}
    mover = threading.Thread(target=source.move_stage, args=(12.0, -7.0))
    mover.start()
    mover.join()
    assert source.stage_position_nm == (12.0, -7.0)
    source.next_frame(0.1)
    after = {r["particle"]: (r["x"], r["y"]) for r in source.last_truth.truth}
    # Particle 2 moves along +y by 156/60 px per frame on its own; the stage adds (-12, +7) px.
    assert after[1][0] - before[1][0] == pytest.approx(156 / 60 - 12.0)
    assert after[1][1] - before[1][1] == pytest.approx(7.0)
    assert after[2][1] - before[2][1] == pytest.approx(156 / 60 + 7.0)
    labels = source.last_truth.labels
    _ys, xs = np.nonzero(labels == 1)
    assert xs.mean() == pytest.approx(after[1][0], abs=0.2)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="fps"):
        SimulatedSource("demo", fps=0)
    with pytest.raises(ValueError, match="preset"):
        SimulatedSource("nope")


def test_contrast_is_measured_only_on_request() -> None:
    plain = SimulatedSource("crossing", n_frames=1, as_fast_as_possible=True)
    measured = SimulatedSource("crossing", n_frames=1, as_fast_as_possible=True, measure_contrast=True)
    for source in (plain, measured):
        source.open()
        source.next_frame(0.1)
    assert np.isnan(plain.last_truth.cnr)
    assert measured.last_truth.cnr > 1.0  # crossing preset: 10x dose
