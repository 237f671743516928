"""What real detectors and real samples do to a frame that our forward model does not: frame effects.

Each function takes a frame in electrons per pixel (float32, as `FrameRenderer` produces it with
``output_dtype="float32"`` and a gain of 1) and returns a new one; none mutates its input. They model:

- contrast inversion (bright particles on a dark background, as in HAADF-STEM or dark field);
- a strong background ramp times a radial vignette (uneven illumination, condenser aperture);
- a correlated 1/f^β background texture (membrane roughness, liquid thickness variation) — *not* derived
  from our simulator, whose background is flat;
- Gaussian read noise on top of Poisson counts, a Gaussian point-spread function instead of our MTF, and a
  different gain in each detector quadrant (a 4-port readout);
- 8-bit JPEG encoding (the SAM4EM data layout): quantisation to 0–255 and 8×8 block artifacts.

Coordinates: x = column, y = row, pixels.
"""

from __future__ import annotations

import io
import math

import numpy as np
from scipy import ndimage


def invert_contrast(electrons: np.ndarray, background_e: float, floor_fraction: float = 0.25) -> np.ndarray:
    """Bright-on-dark: ``c − e`` with c chosen so the background lands at ``floor_fraction`` of its level.

    The noise (and so the CNR) is unchanged; only the sign of the contrast and the mean level change.
    """
    offset = np.float32(background_e * (1.0 + floor_fraction))
    return np.maximum(offset - electrons, 0.0).astype(np.float32)


def illumination_map(shape: tuple[int, int], ramp_fraction: float, ramp_angle_deg: float,
                     vignette_fraction: float) -> np.ndarray:
    """Multiplicative illumination: a linear ramp (relative peak-to-peak) times a radial vignette.

    The vignette falls quadratically from 1 at the centre to ``1 − vignette_fraction`` at the corners.
    """
    rows, cols = shape
    y = np.arange(rows, dtype=np.float32)[:, None] - (rows - 1) / 2
    x = np.arange(cols, dtype=np.float32)[None, :] - (cols - 1) / 2
    theta = math.radians(ramp_angle_deg)
    ramp = x * math.cos(theta) + y * math.sin(theta)
    span = float(ramp.max() - ramp.min()) or 1.0
    corner_sq = float(x[0, 0] ** 2 + y[0, 0] ** 2) or 1.0
    vignette = 1.0 - vignette_fraction * (x * x + y * y) / corner_sq
    return ((1.0 + ramp_fraction * ramp / span) * vignette).astype(np.float32)


def fractal_texture(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian field with power spectrum ∝ 1/f^β (β = 1: pink; 2: Brownian surface)."""
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
    field = np.fft.irfft2(spectrum, s=shape)
    field -= field.mean()
    return (field / (field.std() or 1.0)).astype(np.float32)


def quadrant_gains(shape: tuple[int, int], gains: tuple[float, float, float, float]) -> np.ndarray:
    """Per-pixel gain of a 4-port detector: (top-left, top-right, bottom-left, bottom-right)."""
    rows, cols = shape
    out = np.empty(shape, dtype=np.float32)
    out[: rows // 2, : cols // 2] = gains[0]
    out[: rows // 2, cols // 2 :] = gains[1]
    out[rows // 2 :, : cols // 2] = gains[2]
    out[rows // 2 :, cols // 2 :] = gains[3]
    return out


def foreign_detector(mean_electrons: np.ndarray, rng: np.random.Generator, *, texture: np.ndarray,
                     texture_fraction: float, psf_sigma_px: float, read_noise_e: float,
                     gains: np.ndarray) -> np.ndarray:
    """A noise model built on other assumptions than ours, from a noise-free expected-electron image.

    mean × (1 + texture_fraction · texture) → Poisson → Gaussian PSF (σ px) → + N(0, read_noise²) → × gains.
    """
    lam = np.maximum(mean_electrons * (1.0 + np.float32(texture_fraction) * texture), 0.0)
    counts = rng.poisson(lam).astype(np.float32)
    if psf_sigma_px > 0:
        counts = ndimage.gaussian_filter(counts, psf_sigma_px)
    counts += np.float32(read_noise_e) * rng.standard_normal(counts.shape, dtype=np.float32)
    return (counts * gains).astype(np.float32)


def to_uint8(electrons: np.ndarray, adu_per_electron: float) -> np.ndarray:
    """Detector counts to 8 bits: scale, round, clip to 0–255."""
    return np.clip(np.rint(electrons * np.float32(adu_per_electron)), 0, 255).astype(np.uint8)


def to_uint16(electrons: np.ndarray, adu_per_electron: float) -> np.ndarray:
    """Detector counts to 16 bits: scale, round, clip to 0–65535."""
    return np.clip(np.rint(electrons * np.float32(adu_per_electron)), 0, 65535).astype(np.uint16)


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Encode an 8-bit frame as a baseline JPEG at ``quality`` (1–95) and decode it again (Pillow)."""
    from PIL import Image

    if pixels.dtype != np.uint8:
        raise ValueError(f"JPEG needs uint8 frames, got {pixels.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
