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

    Transparent where there is no particle, so the browser can count mask pixels by alpha. One table
    lookup per pixel (a per-particle loop costs ~20 ms at 1024², a click's budget is 300 ms).
    """
    table = np.zeros((len(PALETTE) + 1, 4), dtype=np.uint8)
    table[1:, :3] = PALETTE
    table[1:, 3] = alpha
    index = np.where(labels > 0, (labels.astype(np.int64) - 1) % len(PALETTE) + 1, 0)
    return table[index]


def mask_crop(labels: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The smallest part of ``labels`` holding every particle, and its (x0, y0) px; 1x1 empty if none.

    Only this part is coloured, encoded and sent: a few particles on a 1024² frame are a few KiB.
    """
    rows = np.flatnonzero(labels.any(axis=1))
    if rows.size == 0:
        return np.zeros((1, 1), dtype=labels.dtype), (0, 0)
    cols = np.flatnonzero(labels.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return labels[y0:y1, x0:x1], (x0, y0)
