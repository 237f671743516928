"""Image formation: Beer–Lambert bright field, detector MTF, noise, contrast figures.

Expected electrons per pixel (Yao et al. 2020)::

    Ī = N_e · exp(−[Σ t_p/λ_p + (T_w − Σ t_p)/λ_w + n_win · T_SiN/λ_SiN]),  N_e = Φ · 100 · s² · τ

with Φ in e⁻/Å²s, s in nm, τ in s and all thicknesses and mean free paths in nm.
The detector MTF is a radially symmetric generalised Lorentzian in cycles/pixel,
applied after shot noise (the detector spreads each electron's signal), so it
both blurs edges and colours the noise.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

if TYPE_CHECKING:
    from sam4em_live.sim.spec import ImagingSpec, LiquidCellSpec

#: Pixels around a particle's footprint left out of the background statistics
#: (the MTF spreads particle contrast a few pixels beyond the footprint).
CONTRAST_GUARD_PX = 3


def background_optical_depth(cell: LiquidCellSpec) -> float:
    """Σ T/λ of the liquid and the windows with no particle (dimensionless)."""
    return (
        cell.water_thickness_nm / cell.water_mean_free_path_nm
        + cell.window_count * cell.window_thickness_nm / cell.window_mean_free_path_nm
    )


def transmission(
    particle_depth: np.ndarray, particle_thickness_nm: np.ndarray, cell: LiquidCellSpec
) -> np.ndarray:
    """Transmission relative to the particle-free background.

    ``particle_depth`` is Σ t_p/λ_p and ``particle_thickness_nm`` Σ t_p. Liquid
    displaced by the particles stops attenuating (optionally no more than the liquid present).
    """
    displaced = particle_thickness_nm
    if cell.clip_displaced_liquid:
        displaced = np.minimum(particle_thickness_nm, cell.water_thickness_nm)
    return np.exp(-(particle_depth - displaced / cell.water_mean_free_path_nm))


def background_electrons(imaging: ImagingSpec, cell: LiquidCellSpec) -> float:
    """Expected electrons in a particle-free pixel."""
    return imaging.electrons_per_pixel * math.exp(-background_optical_depth(cell))


@lru_cache(maxsize=8)
def mtf_response(shape: tuple[int, int], f0_cycles_per_px: float, power: float) -> np.ndarray:
    """M(f) = 1 / (1 + (f/f0)^p) on the rfft2 grid of ``shape``; 0 beyond f = 0.5; M(0) = 1.

    Returned read-only (it is cached and shared).
    """
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    response = 1.0 / (1.0 + (f / f0_cycles_per_px) ** power)
    response[f > 0.5] = 0.0
    response = response.astype(np.float32)
    response.setflags(write=False)
    return response


def mtf_noise_factor(shape: tuple[int, int], f0_cycles_per_px: float, power: float) -> float:
    """Factor by which the MTF multiplies the std of white noise: sqrt(mean M² over the full grid)."""
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.fftfreq(cols)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    response = np.where(f > 0.5, 0.0, 1.0 / (1.0 + (f / f0_cycles_per_px) ** power))
    return float(np.sqrt(np.mean(response**2)))


def apply_mtf(image: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Filter ``image`` by ``response`` (from `mtf_response`); preserves the mean. float32 out."""
    spectrum = sfft.rfft2(np.asarray(image, dtype=np.float32), workers=1)
    spectrum *= response
    return sfft.irfft2(spectrum, s=image.shape, workers=1)


def gradient_map(imaging: ImagingSpec) -> np.ndarray | None:
    """Linear multiplicative background ramp with mean 1 and relative peak-to-peak ``gradient_fraction``."""
    if imaging.gradient_fraction <= 0:
        return None
    rows, cols = imaging.shape_px
    theta = math.radians(imaging.gradient_angle_deg)
    ramp = (np.arange(cols)[None, :] * math.cos(theta) + np.arange(rows)[:, None] * math.sin(theta))
    span = float(ramp.max() - ramp.min()) or 1.0
    ramp = (ramp - ramp.mean()) / span
    return (1.0 + imaging.gradient_fraction * ramp).astype(np.float32)


def frame_contrast(pixels: np.ndarray, labels: np.ndarray, guard_px: int = CONTRAST_GUARD_PX) -> tuple[float, float]:
    """Per-frame ``CNR = (μ_bg − μ_particle)/σ_bg`` and Yao's ``SNR = μ_bg/σ_bg``.

    Particle pixels are the ground-truth footprints; background pixels are the
    rest of the frame farther than ``guard_px`` from any footprint. CNR is NaN
    when no particle is in the field.
    """
    values = np.asarray(pixels, dtype=np.float32)
    # Sums of deviations from a rough level keep float32 sums of squares accurate and fast.
    level = float(values[::16, ::16].mean())
    dev = values - np.float32(level)
    count = dev.size
    total = float(dev.sum(dtype=np.float64))
    total_sq = float(np.einsum("ij,ij->", dev, dev, dtype=np.float64))
    footprint = labels > 0
    particle_mean = math.nan
    if footprint.any():
        excluded_mask = np.zeros(labels.shape, dtype=bool)
        for sl in ndimage.find_objects(labels):
            if sl is None:
                continue
            # Grow each particle's box by the guard and dilate only there (particles may be far apart).
            box = tuple(slice(max(s.start - guard_px, 0), s.stop + guard_px) for s in sl)
            near = footprint[box]
            excluded_mask[box] |= ndimage.binary_dilation(near, iterations=guard_px) if guard_px else near
        rows = np.flatnonzero(excluded_mask.any(axis=1))
        cols = np.flatnonzero(excluded_mask.any(axis=0))
        region = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        excluded = dev[region][excluded_mask[region]].astype(np.float64)
        count -= excluded.size
        total -= float(excluded.sum())
        total_sq -= float(excluded @ excluded)
        particle_mean = float(values[footprint].mean(dtype=np.float64))
    if count <= 1:
        return math.nan, math.nan
    mu_bg = level + total / count
    sigma_bg = math.sqrt(max(total_sq / count - (total / count) ** 2, 0.0))
    snr = mu_bg / sigma_bg if sigma_bg > 0 else math.inf
    if math.isnan(particle_mean) or sigma_bg == 0:
        return math.nan, snr
    return (mu_bg - particle_mean) / sigma_bg, snr
