"""Embedded backend internals that decide speed: symmetry classes, the near-first search and its fallback."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from sam4em_live.frames import Frame
from sam4em_live.particles import Prompt
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.segment.registry import create_segmenter


def _memory(mask: np.ndarray) -> ShapeMemory:
    return ShapeMemory(mask.astype(np.float32), mask, EmbeddedOptions())


def _grid(half: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(axis, axis)


def test_symmetry_classes_lumpy_disc_rod_square() -> None:
    u, v = _grid(30)
    rng = np.random.default_rng(4)
    theta = np.arctan2(v, u)
    bumps = 1.2 * np.sin(3 * theta + 0.4) + 0.9 * np.sin(5 * theta + 1.0)  # a lumpy small sphere
    lumpy = np.hypot(u, v) <= 14 + bumps + rng.normal(0, 0.3, u.shape)
    rod = (np.abs(u) <= 22) & (np.abs(v) <= 6)
    square = (np.abs(u) <= 12) & (np.abs(v) <= 12)
    assert _memory(lumpy).period_deg == 0.0  # one template angle
    assert _memory(rod).period_deg == 180.0
    assert _memory(square).period_deg == 90.0


def _disc_clip(positions: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """Dark discs (radius 12 px, contrast 0.3) on a noisy 256² background, one frame per position."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256]
    frames = []
    for x, y in positions:
        disc = np.hypot(xx - x, yy - y) <= 12
        mean = 1000.0 * (1 - 0.3 * disc)
        frames.append(rng.poisson(mean).astype(np.uint16))
    return np.stack(frames)


@pytest.mark.parametrize("near_px", [16.0, 0.0])
def test_a_long_hop_is_found_beyond_the_near_window(near_px: float, monkeypatch) -> None:
    # Small steps, then one 30 px hop (beyond the 16 px near window), then small steps again.
    path = [(100.0 + 2 * i, 128.0) for i in range(10)] + [(148.0 + 2 * i, 128.0) for i in range(8)]
    frames = _disc_clip(path)
    segmenter = create_segmenter("embedded", {"near_search_radius_px": near_px})
    windows: list[tuple[int, bool]] = []  # (frame, near?) of every window searched
    search_window = EmbeddedSegmenter._search_window

    def spy(self, *args, **kwargs):
        windows.append((frame_index, kwargs.get("near", False)))
        return search_window(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddedSegmenter, "_search_window", spy)
    found = []
    for frame_index, pixels in enumerate(frames):
        edits = [Prompt(1, 0, ((100.0, 128.0),), (1,))] if frame_index == 0 else []
        (mask,) = segmenter.track(Frame("hop", frame_index, time.time(), pixels), edits)
        assert mask.present, f"lost at frame {frame_index}"
        found.append((mask.extras["x"], mask.extras["y"]))
    errors = [np.hypot(fx - tx, fy - ty) for (fx, fy), (tx, ty) in zip(found, path, strict=True)]
    assert max(errors) < 2.0, errors
    followed = [(i, near) for i, near in windows if i > 0]
    if near_px > 0:  # small steps stop at the near window; the hop frame also searched the full one
        assert all(near for i, near in followed if i != 10)
        assert (10, False) in followed
    else:
        assert not any(near for _, near in followed)


def test_live_backlog_defers_learning_at_most_three_times_in_a_row(monkeypatch) -> None:
    frames = _disc_clip([(100.0 + i, 128.0) for i in range(30)])
    segmenter = create_segmenter("embedded", {"memory_frames": 4, "appearance_update_interval_frames": 1})
    learned: list[int] = []
    learn = EmbeddedSegmenter._learn

    def spy(self, *args, **kwargs):
        learned.append(frame_index)
        return learn(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddedSegmenter, "_learn", spy)
    for frame_index, pixels in enumerate(frames):
        segmenter.note_backlog(5 if frame_index >= 10 else 0)  # behind from frame 10 on
        edits = [Prompt(1, 0, ((100.0, 128.0),), (1,))] if frame_index == 0 else []
        (mask,) = segmenter.track(Frame("lag", frame_index, time.time(), pixels), edits)
        assert mask.present
    assert all(i in learned for i in range(1, 10))  # not behind: every due frame
    behind = [i for i in learned if i >= 10]
    assert behind and all(b - a == 4 for a, b in itertools.pairwise(behind))  # 3 skipped, then one


def test_presence_hysteresis_on_z_and_contrast() -> None:
    from sam4em_live.segment.embedded.search import PoseEstimate
    from sam4em_live.segment.embedded.tracker import PRESENCE_HOLD, Z_HOLD, TrackedParticle

    options = EmbeddedOptions()
    disc = np.hypot(*_grid(20)) <= 10
    track = TrackedParticle(1, _memory(disc), 1.0, 50.0, 50.0, 0.0, amplitude_ref=0.1, z_ref=9.0)
    z_between = options.min_detection_z * (Z_HOLD + 1.0) / 2  # below the threshold, above the held one
    amplitude_between = 0.1 * options.presence_fraction * (PRESENCE_HOLD + 1.0) / 2
    faint = PoseEstimate(50.0, 50.0, 0.0, z_between, 0.1)
    weak = PoseEstimate(50.0, 50.0, 0.0, 9.0, amplitude_between)
    lost = PoseEstimate(50.0, 50.0, 0.0, options.min_detection_z * Z_HOLD * 0.95, 0.1)
    assert track.present
    assert track.is_detection(faint, 1.0, options) and track.is_detection(weak, 1.0, options)  # held
    assert not track.is_detection(lost, 1.0, options)  # below the held z threshold too
    assert not track.is_detection(faint, 1.0, options, strict=True)  # re-acquisition needs the full thresholds
    track.lose()
    assert not track.is_detection(faint, 1.0, options) and not track.is_detection(weak, 1.0, options)
    assert track.is_detection(PoseEstimate(50.0, 50.0, 0.0, 9.0, 0.1), 1.0, options)
