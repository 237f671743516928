"""Simulated videos: frame-at-a-time generation, whole clips, and prompts from the truth.

One implementation (`SimulationRun.next_frame`) serves the streaming source,
the frame generator `iter_frames` and the batch `simulate_video`, so a clip
and a stream with the same spec and seed are identical frame for frame.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from sam4em_live.frames import Calibration
from sam4em_live.particles import Prompt
from sam4em_live.sim.motion import DEFAULT_BLOCK_FRAMES, ParticleTrajectory, Pose
from sam4em_live.sim.render import FrameRenderer, RenderedFrame

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sam4em_live.sim.spec import SimulationSpec

TRUTH_COLUMNS: tuple[str, ...] = ("frame", "particle", "x", "y", "angle", "area")

PromptKind = Literal["point", "box", "point+box"]


def calibration_of(spec: SimulationSpec) -> Calibration:
    """The calibration a camera with ``spec``'s imaging settings would report."""
    im = spec.imaging
    return Calibration(im.pixel_size_nm, im.fps, im.exposure_s, im.dose_rate_e_per_A2s)


class SimulationRun:
    """Stateful generator of frames for one spec and seed.

    ``next_frame(stage_offset_px)`` renders the next frame with the field of view
    shifted by the stage offset (pixels, cell coordinates): a particle at cell
    position p appears at p − offset. Returns ``None`` once ``n_frames`` are made.
    ``contrast=False`` skips the per-frame CNR/SNR (NaN) to save time when streaming.
    Not thread-safe: one caller renders; the offset is passed in per frame.
    """

    def __init__(
        self, spec: SimulationSpec, seed: int = 0, n_frames: int | None = None, contrast: bool = True
    ) -> None:
        self.spec = spec
        self.contrast = contrast
        self.seed = int(seed)
        self.n_frames = n_frames
        self.renderer = FrameRenderer(spec)
        seeds = np.random.SeedSequence(self.seed).spawn(len(spec.particles) + 1)
        block = (n_frames + 2) if n_frames is not None else DEFAULT_BLOCK_FRAMES
        self._tracks = [
            iter(ParticleTrajectory(p, spec.imaging, np.random.default_rng(s), block_frames=block))
            for p, s in zip(spec.particles, seeds[1:], strict=True)
        ]
        self._noise_rng = np.random.default_rng(seeds[0])
        self._index = 0
        self._next_poses = [next(t) for t in self._tracks]

    @property
    def index(self) -> int:
        """Index of the next frame to render."""
        return self._index

    def next_frame(
        self, stage_offset_px: tuple[float, float] = (0.0, 0.0), dose_factor: float = 1.0,
        visibility: Sequence[float] | None = None,
    ) -> RenderedFrame | None:
        """The next frame (``dose_factor`` and ``visibility``: see `FrameRenderer.render`)."""
        if self.n_frames is not None and self._index >= self.n_frames:
            return None
        start = self._next_poses
        self._next_poses = [next(t) for t in self._tracks]
        exposure = self._exposure_poses(start, self._next_poses)
        ox, oy = stage_offset_px
        shifted = [[None if p is None else Pose(p.x_px - ox, p.y_px - oy, p.angle_deg) for p in poses]
                   for poses in exposure]
        frame = self.renderer.render(self._index, shifted, self._noise_rng, self.contrast, dose_factor,
                                     visibility)
        self._index += 1
        return frame

    def _exposure_poses(self, start: list[Pose | None], end: list[Pose | None]) -> list[list[Pose | None]]:
        """Poses at the sub-steps of the exposure (linear between this frame's and the next frame's pose)."""
        substeps = self.spec.imaging.motion_blur_substeps
        if substeps <= 1:
            return [start]
        duty = min(self.spec.imaging.exposure_s * self.spec.imaging.fps, 1.0)
        out = []
        for k in range(substeps):
            w = duty * k / substeps
            out.append([
                a if a is None or b is None else Pose(
                    a.x_px + w * (b.x_px - a.x_px), a.y_px + w * (b.y_px - a.y_px),
                    a.angle_deg + w * (b.angle_deg - a.angle_deg))
                for a, b in zip(start, end, strict=True)
            ])
        return out


def iter_frames(
    spec: SimulationSpec, seed: int = 0, n_frames: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, list[dict[str, float]]]]:
    """Yield ``(pixels, gt_labels, gt_rows)`` frame by frame (endless when ``n_frames`` is None).

    ``gt_rows`` are dicts with the `TRUTH_COLUMNS` for particles at least partly in the field.
    """
    run = SimulationRun(spec, seed, n_frames)
    while (frame := run.next_frame()) is not None:
        yield frame.pixels, frame.labels, [{"frame": frame.index, **row} for row in frame.truth]


@dataclass(frozen=True)
class SimulatedVideo:
    """A simulated clip with exact ground truth (see `simulate_video`)."""

    frames: np.ndarray  # (T, H, W) detector dtype
    gt_labels: np.ndarray  # (T, H, W) uint16, value = particle id, 0 = background
    gt_table: pd.DataFrame  # TRUTH_COLUMNS, one row per particle per frame in the field
    cnr: np.ndarray  # (T,) per-frame CNR = (μ_bg − μ_particle)/σ_bg (NaN: no particle)
    snr: np.ndarray  # (T,) per-frame Yao SNR = μ_bg/σ_bg
    spec: SimulationSpec
    calibration: Calibration
    seed: int = 0

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def simulate_video(spec: SimulationSpec, n_frames: int, seed: int = 0) -> SimulatedVideo:
    """Render ``n_frames`` frames of ``spec`` with ``seed`` into memory."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    run = SimulationRun(spec, seed, n_frames)
    rows, cols = run.renderer.shape
    first = run.next_frame()
    assert first is not None
    frames = np.empty((n_frames, rows, cols), dtype=first.pixels.dtype)
    labels = np.empty((n_frames, rows, cols), dtype=np.uint16)
    cnr = np.empty(n_frames)
    snr = np.empty(n_frames)
    table: list[dict[str, float]] = []
    frame: RenderedFrame | None = first
    while frame is not None:
        i = frame.index
        frames[i], labels[i], cnr[i], snr[i] = frame.pixels, frame.labels, frame.cnr, frame.snr
        table.extend({"frame": i, **row} for row in frame.truth)
        frame = run.next_frame()
    gt_table = pd.DataFrame(table, columns=list(TRUTH_COLUMNS))
    gt_table = gt_table.astype({"frame": "int64", "particle": "int64", "area": "int64"})
    return SimulatedVideo(frames, labels, gt_table, cnr, snr, spec, calibration_of(spec), int(seed))


def make_prompts(
    video: SimulatedVideo, frames: Sequence[int] = (0, 125), kind: PromptKind = "point"
) -> list[Prompt]:
    """Prompts from the truth on ``frames`` (those that exist), one per particle present.

    The point is the true centroid (or, if that pixel is not on the particle's
    visible mask — cut by the edge or hidden by another particle — the nearest
    mask pixel); the box is the tight box around the mask's pixel edges.
    """
    return prompts_from_truth(video.gt_labels, video.gt_table, frames, kind)


def prompts_from_truth(
    gt_labels: np.ndarray, gt_table: pd.DataFrame, frames: Sequence[int] = (0, 125), kind: PromptKind = "point"
) -> list[Prompt]:
    """`make_prompts` from a label stack (any array-like indexable by frame) and its truth table."""
    if kind not in ("point", "box", "point+box"):
        raise ValueError(f"kind must be 'point', 'box' or 'point+box', got {kind!r}")
    prompts: list[Prompt] = []
    for f in frames:
        if not 0 <= f < len(gt_labels):
            continue
        rows = gt_table[gt_table["frame"] == f]
        particles = rows["particle"].to_numpy(dtype=np.int64)
        xs, ys = rows["x"].to_numpy(dtype=np.float64), rows["y"].to_numpy(dtype=np.float64)
        for particle, x, y in zip(particles, xs, ys, strict=True):
            mask = np.asarray(gt_labels[f]) == particle
            if not mask.any():
                continue
            points: tuple[tuple[float, float], ...] = ()
            labels: tuple[int, ...] = ()
            if kind in ("point", "point+box"):
                points, labels = (point_on_mask(mask, float(x), float(y)),), (1,)
            box = mask_box(mask) if kind in ("box", "point+box") else None
            prompts.append(Prompt(int(particle), int(f), points, labels, box))
    return prompts


def point_on_mask(mask: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """(x, y) if its pixel is on ``mask``, else the centre of the nearest mask pixel."""
    col, row = round(x), round(y)
    if 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and mask[row, col]:
        return (float(x), float(y))
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return (float(xs[k]), float(ys[k]))


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight (x0, y0, x1, y1) around the outer edges of the mask's pixels."""
    ys, xs = np.nonzero(mask)
    return (float(xs.min()) - 0.5, float(ys.min()) - 0.5, float(xs.max()) + 0.5, float(ys.max()) + 0.5)


class StageOffset:
    """Thread-safe stage position in nm, read by the rendering thread as a pixel offset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._x_nm = 0.0
        self._y_nm = 0.0

    def move(self, dx_nm: float, dy_nm: float) -> None:
        with self._lock:
            self._x_nm += float(dx_nm)
            self._y_nm += float(dy_nm)

    @property
    def position_nm(self) -> tuple[float, float]:
        with self._lock:
            return (self._x_nm, self._y_nm)
