"""Shared pieces of the embedded backend tests: run a segmenter over a simulated clip and score it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sam4em_live.evaluate.metrics import evaluate_run
from sam4em_live.frames import Frame
from sam4em_live.particles import ParticleEdit, ParticleMask
from sam4em_live.segment.registry import create_segmenter
from sam4em_live.sim.presets import get_preset
from sam4em_live.sim.spec import SimulationSpec
from sam4em_live.sim.video import SimulatedVideo, simulate_video


def preset_video(name: str, n_frames: int, seed: int = 0, **imaging: Any) -> SimulatedVideo:
    """A seeded clip of preset ``name``, with optional imaging overrides (dtype, gradient...)."""
    spec = get_preset(name)
    if imaging:
        spec = spec.model_copy(update={"imaging": spec.imaging.model_copy(update=imaging)})
    return simulate_video(SimulationSpec.model_validate(spec.model_dump()), n_frames, seed)


def run_clip(frames: np.ndarray, edits: Sequence[ParticleEdit], options: dict[str, Any] | None = None,
             ) -> tuple[np.ndarray, list[list[ParticleMask]]]:
    """Track a (T, H, W) clip frame by frame; edits are applied on their ``frame``.

    Returns the predicted label video (particle id per pixel) and the masks per frame.
    """
    segmenter = create_segmenter("embedded", options or {})
    labels = np.zeros(frames.shape, dtype=np.uint16)
    history: list[list[ParticleMask]] = []
    for i, pixels in enumerate(frames):
        masks = segmenter.track(Frame("test", i, 0.0, pixels), [e for e in edits if e.frame == i])
        for mask in masks:
            if mask.present:
                x0, y0, x1, y1 = mask.bbox
                labels[i, y0:y1, x0:x1][mask.crop] = mask.particle
        history.append(masks)
    return labels, history


def score(video: SimulatedVideo, labels: np.ndarray) -> dict[str, Any]:
    return evaluate_run(labels, video.gt_labels, gt_table=video.gt_table).summary()
