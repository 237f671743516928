"""Qt-free image helpers for the monitor: contrast lookup tables, colours, overlays.

The display path is: raw preview pixels → `ContrastLut.apply` (one table
lookup into uint8, the table rebuilt only when the levels change) →
an image item shown with fixed levels (0, 255). No per-frame autoscale: levels
change only when the user asks (`auto_levels` on demand).
"""

from __future__ import annotations

import colorsys
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

#: Integer dtypes small enough for a full lookup table (entries = 2**bits).
_LUT_DTYPES = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 0, np.dtype(np.int16): 32768}


def auto_levels(pixels: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> tuple[float, float]:
    """Robust display levels (percentiles of a subsample); only called on demand."""
    sample = np.asarray(pixels)[::4, ::4] if pixels.size > 65536 else np.asarray(pixels)
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(finite, [low_percentile, high_percentile])
    if high <= low:
        high = low + 1.0
    return (float(low), float(high))


class ContrastLut:
    """Map raw pixels to uint8 grey with fixed levels.

    For uint8/uint16/int16 pixels the mapping is one precomputed table indexed
    by the raw value (built once per level change); other dtypes are scaled
    arithmetically with the same fixed levels.
    """

    def __init__(self, levels: tuple[float, float] = (0.0, 255.0)) -> None:
        self._levels = (0.0, 1.0)
        self._tables: dict[np.dtype, np.ndarray] = {}
        self.set_levels(levels)

    @property
    def levels(self) -> tuple[float, float]:
        return self._levels

    def set_levels(self, levels: tuple[float, float]) -> None:
        low, high = float(levels[0]), float(levels[1])
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"levels must be finite, got {levels}")
        if high <= low:
            high = low + 1e-6
        if (low, high) != self._levels:
            self._levels = (low, high)
            self._tables.clear()  # rebuilt lazily, once, for each dtype seen

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        dtype = pixels.dtype
        if dtype in _LUT_DTYPES:
            table = self._tables.get(dtype)
            if table is None:
                table = self._tables[dtype] = self._build_table(dtype)
            offset = _LUT_DTYPES[dtype]
            index = pixels if offset == 0 else (pixels.astype(np.int32) + offset)
            return table[index]
        low, high = self._levels
        scaled = (np.asarray(pixels, dtype=np.float32) - low) * np.float32(255.0 / (high - low))
        return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)

    def _build_table(self, dtype: np.dtype) -> np.ndarray:
        info = np.iinfo(dtype)
        values = np.arange(info.min, info.max + 1, dtype=np.float64)
        low, high = self._levels
        return np.clip((values - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)


def particle_colour(particle: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour for a particle id (golden-angle hues)."""
    hue = (particle * 0.6180339887498949) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.7, 1.0)  # light enough to read on dark
    return (int(red * 255), int(green * 255), int(blue * 255))


def age_colours(count: int) -> np.ndarray:
    """``count`` RGBA colours from old (dark violet) to new (bright yellow), uint8."""
    t = np.linspace(0.0, 1.0, max(count, 1))
    # A short perceptually ordered ramp (violet → teal → yellow), like viridis.
    anchors = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)
    pos = t * (len(anchors) - 1)
    lower = np.floor(pos).astype(int).clip(0, len(anchors) - 2)
    frac = (pos - lower)[:, None]
    rgb = anchors[lower] * (1 - frac) + anchors[lower + 1] * frac
    alpha = np.full((rgb.shape[0], 1), 255.0)
    return np.hstack([rgb, alpha]).round().astype(np.uint8)


def paint_mask(
    overlay: np.ndarray,
    crop: np.ndarray,
    bbox: Sequence[int],
    step: int,
    rgba: Iterable[int],
) -> None:
    """Paint a full-frame mask crop onto a decimated RGBA ``overlay`` in place.

    ``overlay[r, c]`` stands for full-frame pixel ``(r * step, c * step)`` (the
    preview's sampling), so mask pixels are sampled on the same grid.
    """
    x0, y0 = int(bbox[0]), int(bbox[1])  # the crop's shape gives the far edges
    row0, col0 = -(-y0 // step), -(-x0 // step)  # first preview row/column inside the bbox
    sub = crop[row0 * step - y0 :: step, col0 * step - x0 :: step]
    rows = min(sub.shape[0], overlay.shape[0] - row0)
    cols = min(sub.shape[1], overlay.shape[1] - col0)
    if rows <= 0 or cols <= 0 or row0 < 0 or col0 < 0:
        return
    target = overlay[row0 : row0 + rows, col0 : col0 + cols]
    target[sub[:rows, :cols]] = np.asarray(tuple(rgba), dtype=np.uint8)
