"""``threshold``: a simple, honest baseline backend.

Prompt-seeded thresholding in a window around each particle's last position.
At the prompt it learns the local background level, the particle's contrast
(particles are dark in bright field) and its area; on each frame it smooths a
window around the last centroid, thresholds half-way between background and
particle level, and keeps the connected component nearest the last position
whose area is plausible. No appearance model, no rotation search: it is the
reference the embedded backend must beat, and it keeps the service usable if
the other backends are unavailable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from sam4em_live.config import FrozenModel
from sam4em_live.particles import ParticleEdit, ParticleMask, Prompt, PromptError, RemoveParticle

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.frames import Frame


class ThresholdOptions(FrozenModel):
    """Options of the threshold backend (``[segmenter.options]``); lengths in pixels."""

    smoothing_sigma_px: float = 3.0
    search_radius_px: int = 48
    default_prompt_radius_px: int = 24
    min_area_ratio: float = 0.3
    max_area_ratio: float = 3.0


@dataclass
class _Track:
    x: float
    y: float
    area: float
    background: float
    particle_level: float
    size_px: float


class ThresholdSegmenter:
    """The simple baseline: smoothed-intensity threshold around each particle's last position."""

    def __init__(self, options: ThresholdOptions | None = None) -> None:
        self.options = options or ThresholdOptions()
        self._tracks: dict[int, _Track] = {}

    def describe(self) -> dict[str, Any]:
        return {"backend": "threshold", "random_weights": False, "options": self.options.model_dump()}

    def particles(self) -> list[int]:
        return sorted(self._tracks)

    def close(self) -> None:
        self._tracks.clear()

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = ()) -> list[ParticleMask]:
        pixels = frame.pixels
        for edit in edits:
            if isinstance(edit, RemoveParticle):
                self._tracks.pop(edit.particle, None)
            else:
                self._tracks[edit.particle] = self._seed(pixels, edit)
        return [self._follow(pixels, pid, t) for pid, t in sorted(self._tracks.items())]

    # ------------------------------------------------------------------ internals

    def _window(self, pixels: np.ndarray, x: float, y: float, radius: float) -> tuple[np.ndarray, int, int]:
        rows, cols = pixels.shape
        r = math.ceil(radius)
        x0, y0 = max(0, round(x) - r), max(0, round(y) - r)
        x1, y1 = min(cols, round(x) + r + 1), min(rows, round(y) + r + 1)
        window = ndimage.gaussian_filter(pixels[y0:y1, x0:x1].astype(np.float32), self.options.smoothing_sigma_px)
        return window, x0, y0

    def _seed(self, pixels: np.ndarray, prompt: Prompt) -> _Track:
        if prompt.box is not None:
            bx0, by0, bx1, by1 = prompt.box
            x, y = (bx0 + bx1) / 2, (by0 + by1) / 2
            radius = max(bx1 - bx0, by1 - by0) * 0.75 + 4
        else:
            positives = [p for p, lab in zip(prompt.points, prompt.labels, strict=False) if lab == 1]
            x, y = np.mean(positives, axis=0)
            radius = self.options.default_prompt_radius_px * 1.5
        window, x0, y0 = self._window(pixels, x, y, radius)
        border = np.concatenate([window[0], window[-1], window[:, 0], window[:, -1]])
        background = float(np.median(border))
        cy, cx = round(y) - y0, round(x) - x0
        # A click lands anywhere on the particle: take its darkest part near the click as the level.
        inner = window[max(0, cy - 8): cy + 9, max(0, cx - 8): cx + 9]
        level = float(np.percentile(inner if prompt.box is None else window, 1))
        # Contrast must stand clear of the (smoothed) background noise, or there is nothing to follow.
        noise = float(border.std())
        if not background - level > 3 * noise:
            raise PromptError(
                f"particle {prompt.particle}: no dark particle at the prompt (local level {level:.1f}, "
                f"background {background:.1f} +- {noise:.1f})",
                prompt.particle,
            )
        track = _Track(x, y, area=0.0, background=background, particle_level=level, size_px=radius)
        mask = self._segment(window, track, x - x0, y - y0)
        if mask is None:
            raise PromptError(f"particle {prompt.particle}: nothing segmentable at the prompt", prompt.particle)
        track.area = float(mask.sum())
        rows, cols = np.nonzero(mask)
        track.x, track.y = float(cols.mean()) + x0, float(rows.mean()) + y0
        track.size_px = math.sqrt(track.area / math.pi)
        return track

    def _segment(self, window: np.ndarray, track: _Track, cx: float, cy: float) -> np.ndarray | None:
        threshold = (track.background + track.particle_level) / 2
        labels, count = ndimage.label(window < threshold)
        if count == 0:
            return None
        index = np.arange(1, count + 1)
        areas = ndimage.sum_labels(np.ones_like(window), labels, index)
        centres = np.asarray(ndimage.center_of_mass(np.ones_like(window), labels, index)).reshape(-1, 2)
        dist = np.hypot(centres[:, 1] - cx, centres[:, 0] - cy)
        if track.area > 0:
            plausible = (areas >= track.area * self.options.min_area_ratio) & (
                areas <= track.area * self.options.max_area_ratio
            )
            dist = np.where(plausible, dist, np.inf)
        best = int(np.argmin(dist))
        if not np.isfinite(dist[best]):
            return None
        return labels == best + 1

    def _follow(self, pixels: np.ndarray, pid: int, track: _Track) -> ParticleMask:
        radius = max(self.options.search_radius_px, 2 * track.size_px)
        window, x0, y0 = self._window(pixels, track.x, track.y, radius)
        mask = self._segment(window, track, track.x - x0, track.y - y0)
        if mask is None:
            return ParticleMask.absent(pid)
        rows, cols = np.nonzero(mask)
        track.x, track.y = float(cols.mean()) + x0, float(rows.mean()) + y0
        score = float(np.clip((track.background - window[mask].mean()) /
                              max(track.background - track.particle_level, 1e-6), 0, 1))
        y_lo, y_hi, x_lo, x_hi = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        crop = mask[y_lo:y_hi, x_lo:x_hi]
        bbox = (int(x_lo + x0), int(y_lo + y0), int(x_hi + x0), int(y_hi + y0))
        return ParticleMask(pid, True, score, bbox, np.ascontiguousarray(crop))
