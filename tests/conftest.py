"""Shared fixtures: small synthetic videos with known truth, loopback endpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def disk_video(n_frames: int = 30, shape: tuple[int, int] = (96, 128), centres=((30.0, 40.0), (70.0, 60.0)),
               radius: float = 7.0, velocity=(1.0, 0.5), noise: float = 4.0, seed: int = 0,
               dtype=np.uint16) -> tuple[np.ndarray, np.ndarray]:
    """Dark disks (value 60) on bright background (100) moving at constant velocity, with noise.

    Returns (frames (T,H,W) dtype, truth (T, P, 2) centroids as (x, y)).
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    frames = np.empty((n_frames, *shape), dtype=dtype)
    truth = np.empty((n_frames, len(centres), 2))
    for t in range(n_frames):
        img = np.full(shape, 100.0)
        for p, (x, y) in enumerate(centres):
            cx, cy = x + velocity[0] * t, y + velocity[1] * t
            truth[t, p] = (cx, cy)
            img[(cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2] = 60.0
        img += rng.normal(0, noise, shape)
        frames[t] = np.clip(img, 0, np.iinfo(dtype).max).astype(dtype)
    return frames, truth


@pytest.fixture
def small_video():
    return disk_video()
