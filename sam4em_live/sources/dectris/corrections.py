"""The detector's pixel mask and flatfield, applied to each frame of a series.

DECTRIS detectors flag bad pixels (gaps between modules, dead, hot, noisy) in a 32-bit pixel mask; with
``pixel_mask_applied`` the detector writes them as its saturation value, bright dots a segmenter would
take for particles. We set every flagged pixel to the median of a sample of the frame's good pixels (its
background level), whether or not the detector did: a flagged pixel carries no measurement either way.

The flatfield is a multiplicative gain map. When the detector has not applied it itself and sent it
(``header_detail = all``), ``apply_flatfield = "auto"`` multiplies each frame by it; the frame is then
float32. ``"always"`` applies it even when the detector says it did (never right on real data; kept
for a misconfigured detector), ``"never"`` leaves frames as they come.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from sam4em_live.sources.dectris.messages import DetectorHeader

log = logging.getLogger(__name__)

FlatfieldPolicy = Literal["auto", "always", "never"]
#: Good pixels sampled for the fill value (a strided sample; ~0.2 ms on a 1024^2 frame).
_SAMPLE = 16384


class FrameCorrections:
    """Mask and flatfield of one series; `apply` returns the corrected frame (never writes its input)."""

    def __init__(self, header: DetectorHeader, apply_pixel_mask: bool = True,
                 apply_flatfield: FlatfieldPolicy = "auto") -> None:
        self.shape = header.shape
        mask = header.pixel_mask if apply_pixel_mask else None
        self.masked_flat: np.ndarray | None = None
        self.good_sample: np.ndarray | None = None
        if mask is not None and mask.any():
            self.masked_flat = np.flatnonzero(mask)
            good = np.flatnonzero(~mask)
            self.good_sample = good[:: max(1, good.size // _SAMPLE)]
        flat = header.flatfield
        use_flat = flat is not None and (apply_flatfield == "always" or
                                         (apply_flatfield == "auto" and not header.flatfield_applied))
        self.flatfield = np.asarray(flat, dtype=np.float32) if use_flat and flat is not None else None
        self.masked_pixels = 0 if self.masked_flat is None else int(self.masked_flat.size)

    @property
    def active(self) -> bool:
        return self.masked_flat is not None or self.flatfield is not None

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype("<f4") if self.flatfield is not None else dtype

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` corrected; a frame whose shape is not the mask's passes unchanged (logged by the caller)."""
        out = pixels
        if self.flatfield is not None and self.flatfield.shape == pixels.shape:
            out = pixels.astype(np.float32) * self.flatfield
        if self.masked_flat is not None and self.good_sample is not None and out.size > self.masked_flat[-1]:
            if out is pixels:
                out = pixels.copy()
            flat = out.reshape(-1)
            fill = np.median(flat[self.good_sample]) if self.good_sample.size else 0
            flat[self.masked_flat] = out.dtype.type(fill)
        return out
