"""Particle trajectories: one pose (x_px, y_px, angle_deg) per frame, generated on the fly.

Translation models: static, Brownian (MSD = 4 D t), fractional Brownian motion
(MSD = 4 K t^α, Davies–Harte), heavy-tailed hops, waypoint paths and CSV
trajectories; rotation: rotational diffusion (⟨Δθ²⟩ = 2 D_r t) plus a constant
angular velocity. Increments are drawn in blocks so an endless stream needs
bounded memory; for fBm, correlations hold within a block (the whole clip when
its length is known) and blocks are independent.

Positions are in the coordinates of the cell (the field of view at stage
position zero), in pixels, x = column, y = row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sam4em_live.sim.spec import ImagingSpec, MotionSpec, ParticleSpec

#: Block length for increment generation when the clip length is not known.
DEFAULT_BLOCK_FRAMES = 4096


@dataclass(frozen=True, slots=True)
class Pose:
    """Footprint centroid (pixels) and major-axis angle (degrees, unfolded) of a particle."""

    x_px: float
    y_px: float
    angle_deg: float


def fgn_davies_harte(n: int, hurst: float, rng: np.random.Generator, columns: int = 2) -> np.ndarray:
    """Unit-variance fractional Gaussian noise, shape (n, columns), exact covariance.

    Davies & Harte (1987) circulant embedding: the real and imaginary parts of one
    FFT are independent samples, so two columns cost one transform.
    """
    if n < 1:
        return np.zeros((0, columns))
    k = np.arange(n + 1, dtype=np.float64)
    two_h = 2.0 * hurst
    gamma = 0.5 * (np.abs(k + 1) ** two_h - 2 * k**two_h + np.abs(k - 1) ** two_h)
    circulant = np.concatenate([gamma, gamma[-2:0:-1]])
    eigen = np.maximum(np.fft.fft(circulant).real, 0.0)
    m = circulant.size
    out = np.empty((n, columns))
    for first in range(0, columns, 2):
        z = np.sqrt(eigen / m) * (rng.standard_normal(m) + 1j * rng.standard_normal(m))
        y = np.fft.fft(z)[:n]
        out[:, first] = y.real
        if first + 1 < columns:
            out[:, first + 1] = y.imag
    return out


def translation_steps_nm(motion: MotionSpec, dt_s: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) displacements in nm (dx, dy) for models driven by increments."""
    drift = np.asarray(motion.drift_nm_per_s, dtype=np.float64) * dt_s
    if motion.kind == "brownian":
        sigma = math.sqrt(2.0 * motion.diffusion_nm2_per_s * dt_s)
        return rng.normal(0.0, sigma, (n, 2)) + drift
    if motion.kind == "fbm":
        sigma = math.sqrt(2.0 * motion.diffusion_nm2_per_s * dt_s**motion.alpha)
        return sigma * fgn_davies_harte(n, motion.alpha / 2.0, rng) + drift
    if motion.kind == "hops":
        length = motion.step_median_nm * np.exp(motion.step_log_sigma * rng.standard_normal(n))
        length = np.minimum(length, motion.step_max_nm)
        direction = rng.uniform(0.0, 2 * math.pi, n)
        return np.column_stack([length * np.cos(direction), length * np.sin(direction)]) + drift
    return np.zeros((n, 2)) + drift


def reflect(value: float, lo: float, hi: float) -> float:
    """Fold ``value`` into [lo, hi] by mirror reflection at the walls."""
    if hi <= lo:
        return (lo + hi) / 2
    span = hi - lo
    folded = (value - lo) % (2 * span)
    return lo + (folded if folded <= span else 2 * span - folded)


def read_csv_track(path: str, particle: int | None) -> dict[int, tuple[float, float, float | None]]:
    """Frame → (x_px, y_px, angle_deg or None) for one particle of a trackpy-style CSV."""
    import pandas as pd

    table = pd.read_csv(path)
    missing = {"frame", "x", "y"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: trajectory CSV lacks column(s) {sorted(missing)}")
    if "particle" in table.columns:
        ids = sorted(table["particle"].unique())
        if particle is None:
            if len(ids) != 1:
                raise ValueError(f"{path}: holds particles {ids}; set csv_particle")
            particle = int(ids[0])
        table = table[table["particle"] == particle]
    if table.empty:
        raise ValueError(f"{path}: no rows for particle {particle}")
    frames, xs, ys = (table[c].to_numpy(dtype=np.float64) for c in ("frame", "x", "y"))
    angles = table["angle"].to_numpy(dtype=np.float64) if "angle" in table.columns else None
    return {
        int(frames[i]): (float(xs[i]), float(ys[i]), None if angles is None else float(angles[i]))
        for i in range(len(table))
    }


class ParticleTrajectory:
    """Endless iterator of poses for one particle, one per frame from frame 0."""

    def __init__(
        self,
        particle: ParticleSpec,
        imaging: ImagingSpec,
        rng: np.random.Generator,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
    ) -> None:
        self.particle = particle
        self.motion = particle.motion
        self.rng = rng
        self.block_frames = max(int(block_frames), 2)
        self.dt_s = 1.0 / imaging.fps
        self.pixel_size_nm = imaging.pixel_size_nm
        rows, cols = imaging.shape_px
        margin = self.motion.boundary_margin_px
        self.limits = ((margin, cols - 1 - margin), (margin, rows - 1 - margin))
        csv_path = self.motion.csv_path if self.motion.kind == "csv" else None  # never None for "csv"
        self.csv_track = read_csv_track(csv_path, self.motion.csv_particle) if csv_path is not None else None
        self.x, self.y = self._start_xy(rows, cols)
        self.angle = particle.start_angle_deg if particle.start_angle_deg is not None else rng.uniform(-90, 90)

    def _start_xy(self, rows: int, cols: int) -> tuple[float, float]:
        if self.particle.start_xy_px is not None:
            return self.particle.start_xy_px
        inset = min(self.particle.bounding_radius_nm / self.pixel_size_nm + self.motion.boundary_margin_px,
                    min(rows, cols) / 2 - 1)
        return (float(self.rng.uniform(inset, cols - 1 - inset)), float(self.rng.uniform(inset, rows - 1 - inset)))

    def __iter__(self) -> Iterator[Pose | None]:
        frame = 0
        rot_sigma_deg = math.degrees(math.sqrt(2.0 * self.motion.rotational_diffusion_rad2_per_s * self.dt_s))
        while True:
            steps = translation_steps_nm(self.motion, self.dt_s, self.block_frames, self.rng) / self.pixel_size_nm
            turns = rot_sigma_deg * self.rng.standard_normal(self.block_frames)
            turns += self.motion.angular_velocity_deg_per_s * self.dt_s
            for (dx, dy), turn in zip(steps, turns, strict=True):
                yield self._pose(frame)
                self._advance(float(dx), float(dy), float(turn))
                frame += 1

    def _pose(self, frame: int) -> Pose | None:
        if self.motion.kind == "waypoints":
            wf, wx, wy = (np.asarray(c, dtype=np.float64) for c in zip(*self.motion.waypoints, strict=True))
            return Pose(float(np.interp(frame, wf, wx)), float(np.interp(frame, wf, wy)), self.angle)
        if self.csv_track is not None:
            row = self.csv_track.get(frame)
            if row is None:
                return None
            return Pose(row[0], row[1], row[2] if row[2] is not None else self.angle)
        return Pose(self.x, self.y, self.angle)

    def _advance(self, dx_px: float, dy_px: float, turn_deg: float) -> None:
        self.angle += turn_deg
        self.x += dx_px
        self.y += dy_px
        if self.motion.boundary == "reflect":
            (xlo, xhi), (ylo, yhi) = self.limits
            self.x = reflect(self.x, xlo, xhi)
            self.y = reflect(self.y, ylo, yhi)


def fold_angle_deg(angle_deg: float) -> float:
    """Fold an axis angle into (-90, 90] (the convention of `sam4em_live.measure`)."""
    folded = (angle_deg + 90.0) % 180.0 - 90.0
    return 90.0 if folded <= -90.0 else folded
