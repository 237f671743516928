"""Projected thickness maps t(x, y) in nm of particles lying in the image plane.

Each map is the chord length along the beam (z) through the particle, sampled
at pixel centres inside a local window around the particle, so rendering cost
scales with particle size, not frame size. All shapes are symmetric about the
z = 0 plane, so the chord of a union of convex pieces is the largest of their
chords (used for rods = frustum ∪ two end spheres).

The pose (x, y) of a particle is the area centroid of its footprint, so
ground-truth centroids agree with centroids measured from masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sam4em_live.sim.spec import ParticleSpec


@dataclass(frozen=True, slots=True)
class ThicknessPatch:
    """Thickness (nm, float32) of one particle on rows y0.., columns x0.. of the frame."""

    y0: int
    x0: int
    thickness_nm: np.ndarray

    @property
    def footprint(self) -> np.ndarray:
        return self.thickness_nm > 0

    @property
    def slices(self) -> tuple[slice, slice]:
        rows, cols = self.thickness_nm.shape
        return slice(self.y0, self.y0 + rows), slice(self.x0, self.x0 + cols)


def _chord(radius_sq: np.ndarray | float, dist_sq: np.ndarray) -> np.ndarray:
    return 2.0 * np.sqrt(np.maximum(radius_sq - dist_sq, 0.0))


def thickness_body(particle: ParticleSpec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Chord length (nm) at body-frame coordinates u (along the major axis) and v (nm).

    The body origin is the midpoint of the particle's extent (tip-to-tip for rods,
    the centroid for plates, spheres and cubes).
    """
    if particle.shape == "sphere":
        r = particle.width_nm / 2
        return _chord(r * r, u * u + v * v)
    if particle.shape == "cube":
        half = particle.width_nm / 2
        inside = (np.abs(u) <= half) & (np.abs(v) <= half)
        return np.where(inside, particle.width_nm, 0.0)
    if particle.shape == "prism":
        inradius = particle.width_nm / (2 * math.sqrt(3))
        inside = np.ones(np.broadcast(u, v).shape, dtype=bool)
        for normal_deg in (60.0, 180.0, 300.0):  # outward edge normals; a vertex points along +u
            c, s = math.cos(math.radians(normal_deg)), math.sin(math.radians(normal_deg))
            inside &= u * c + v * s <= inradius
        return np.where(inside, particle.thickness_nm, 0.0)
    return _rod_chord(particle, u, v)


def _rod_chord(particle: ParticleSpec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r1 = particle.width_nm / 2
    r2 = (particle.end_width_nm or particle.width_nm) / 2
    a = -particle.length_nm / 2 + r1  # centre of the first end sphere, on the axis
    b = particle.length_nm / 2 - r2
    v_sq = v * v
    chord = np.maximum(_chord(r1 * r1, (u - a) ** 2 + v_sq), _chord(r2 * r2, (u - b) ** 2 + v_sq))
    if b > a:
        # Cross-sections perpendicular to the axis are circles of radius r(u): exact frustum chord.
        frac = np.clip((u - a) / (b - a), 0.0, 1.0)
        r_u = r1 + (r2 - r1) * frac
        body = np.where((u >= a) & (u <= b), _chord(r_u * r_u, v_sq), 0.0)
        chord = np.maximum(chord, body)
    return chord


@lru_cache(maxsize=64)
def footprint_centroid_offset_nm(particle: ParticleSpec) -> float:
    """Offset along u from the body origin to the footprint's area centroid (nm).

    Zero by symmetry for every shape except a tapered rod, where it is computed
    once on a fine grid.
    """
    if particle.shape != "rod" or particle.end_width_nm in (None, particle.width_nm):
        return 0.0
    step = min(particle.width_nm, particle.end_width_nm) / 200
    half_v = max(particle.width_nm, particle.end_width_nm) / 2
    u = np.arange(-particle.length_nm / 2, particle.length_nm / 2 + step, step)
    v = np.arange(-half_v, half_v + step, step)
    inside = _rod_chord(particle, u[None, :], v[:, None]) > 0
    return float((inside * u[None, :]).sum() / inside.sum())


def render_thickness(
    particle: ParticleSpec,
    x_px: float,
    y_px: float,
    angle_deg: float,
    pixel_size_nm: float,
    frame_shape: tuple[int, int],
    defocus_disk_radius_nm: float = 0.0,
) -> ThicknessPatch | None:
    """Thickness patch of ``particle`` with its footprint centroid at (x_px, y_px).

    Returns ``None`` when the window lies entirely outside the frame.
    """
    rows, cols = frame_shape
    offset_nm = footprint_centroid_offset_nm(particle)
    reach_px = (particle.bounding_radius_nm + abs(offset_nm) + defocus_disk_radius_nm) / pixel_size_nm + 1.5
    x0, x1 = max(math.floor(x_px - reach_px), 0), min(math.ceil(x_px + reach_px) + 1, cols)
    y0, y1 = max(math.floor(y_px - reach_px), 0), min(math.ceil(y_px + reach_px) + 1, rows)
    if x0 >= x1 or y0 >= y1:
        return None
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    dx = (np.arange(x0, x1, dtype=np.float64) - x_px) * pixel_size_nm
    dy = (np.arange(y0, y1, dtype=np.float64) - y_px) * pixel_size_nm
    u = dx[None, :] * c + dy[:, None] * s + offset_nm
    v = -dx[None, :] * s + dy[:, None] * c
    thickness = thickness_body(particle, u, v).astype(np.float32)
    if defocus_disk_radius_nm > 0:
        thickness = _defocus(thickness, defocus_disk_radius_nm / pixel_size_nm)
    return ThicknessPatch(y0, x0, thickness)


def _defocus(thickness: np.ndarray, radius_px: float) -> np.ndarray:
    from scipy.signal import fftconvolve

    r = math.ceil(radius_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (xx * xx + yy * yy <= radius_px * radius_px).astype(np.float32)
    disk /= disk.sum()
    return np.maximum(fftconvolve(thickness, disk, mode="same"), 0.0).astype(np.float32)


def particle_volume_nm3(particle: ParticleSpec) -> float:
    """Analytic volume (nm³), used to check that thickness maps integrate correctly."""
    if particle.shape == "sphere":
        return 4 / 3 * math.pi * (particle.width_nm / 2) ** 3
    if particle.shape == "cube":
        return particle.width_nm**3
    if particle.shape == "prism":
        return math.sqrt(3) / 4 * particle.width_nm**2 * particle.thickness_nm
    r1 = particle.width_nm / 2
    r2 = (particle.end_width_nm or particle.width_nm) / 2
    length = particle.length_nm - r1 - r2  # axis between sphere centres
    if r1 == r2:
        return math.pi * r1**2 * length + 4 / 3 * math.pi * r1**3
    raise ValueError("analytic volume of a tapered rod (overlapping caps) is not provided")
