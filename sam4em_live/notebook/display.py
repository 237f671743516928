"""What the widget shows, computed in the kernel: contrast-stretched frames and label overlays as PNG bytes.

LPTEM frames are dim and noisy: a min/max stretch is dominated by a few hot pixels, so the window is set by
percentiles of the frame and a gamma lifts the dim particles. Everything here is NumPy + Pillow; the browser
only draws the PNGs it is sent (one place computes a thing).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True, slots=True)
class Contrast:
    """A display window: percentiles of the frame (0-100) mapped to black/white, then ``gamma`` (< 1 brightens)."""

    low_pct: float = 1.0
    high_pct: float = 99.5
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_pct < self.high_pct <= 100.0:
            raise ValueError(f"contrast: need 0 <= low_pct < high_pct <= 100, got {self.low_pct}, {self.high_pct}")
        if not self.gamma > 0.0:
            raise ValueError(f"contrast: gamma must be > 0, got {self.gamma}")


# Percentiles of a 1024² frame cost ~20 ms; a strided sample gives the same window to within a grey level.
_SAMPLE_TARGET = 256 * 256


def stretch(pixels: np.ndarray, contrast: Contrast) -> np.ndarray:
    """``pixels`` (rows, columns; any real dtype) as uint8 grey levels under ``contrast``."""
    data = np.asarray(pixels, dtype=np.float32)
    step = max(1, int(np.sqrt(data.size / _SAMPLE_TARGET)))
    sample = data[::step, ::step]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, [contrast.low_pct, contrast.high_pct])
    span = float(hi - lo) or 1.0
    scaled = np.clip((np.nan_to_num(data, nan=float(lo)) - lo) / span, 0.0, 1.0)
    if contrast.gamma != 1.0:
        scaled = scaled ** (1.0 / contrast.gamma)  # gamma > 1 brightens the dim end, as in ImageJ
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 grey (rows, columns) or RGBA (rows, columns, 4) array as PNG bytes (fast compression)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# Well-separated colours (Okabe-Ito, colour-blind safe), cycled by particle id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (255, 255, 255),
)


def colour_of(particle: int) -> tuple[int, int, int]:
    """The display colour of ``particle`` (the same in the overlay, the markers and the trajectories)."""
    return PALETTE[(int(particle) - 1) % len(PALETTE)]


def label_overlay(labels: np.ndarray, alpha: int = 110) -> np.ndarray:
    """A uint16 label image (0 = background, value = particle id) as RGBA: each particle in its colour.

    Transparent where there is no particle, so the browser can count mask pixels by alpha.
    """
    rgba = np.zeros((*labels.shape, 4), dtype=np.uint8)
    for particle in np.unique(labels):
        if particle == 0:
            continue
        where = labels == particle
        rgba[where, :3] = colour_of(int(particle))
        rgba[where, 3] = alpha
    return rgba


def empty_png(shape: tuple[int, int]) -> bytes:
    """A fully transparent overlay of ``shape`` (rows, columns)."""
    return png_bytes(np.zeros((*shape, 4), dtype=np.uint8))
