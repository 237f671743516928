"""Frames and series metadata: what flows out of every `FrameSource`.

Coordinates everywhere in sam4em-live are pixels with x = column, y = row and the
origin at the centre of the top-left pixel. Physical units are carried explicitly
(`pixel_size_nm`, `fps`); nothing downstream assumes a default calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Pixel types accepted from detectors (numpy dtype strings, little-endian).
SUPPORTED_DTYPES: tuple[str, ...] = ("|u1", "<u2", "<u4", "<i2", "<i4", "<f4", "<f8")

#: Largest frame edge we accept, in pixels: guards against absurd headers.
MAX_FRAME_EDGE_PX = 16384


@dataclass(frozen=True, slots=True)
class Calibration:
    """Physical calibration of a series. Every field is optional: ``None`` means unknown."""

    pixel_size_nm: float | None = None
    fps: float | None = None
    exposure_s: float | None = None
    dose_rate_e_per_A2s: float | None = None

    def merged(self, other: Calibration) -> Calibration:
        """Fields of ``other`` that are set win over ours (CLI flags over metadata)."""
        return replace(self, **{k: v for k, v in other.as_dict().items() if v is not None})

    def as_dict(self) -> dict[str, float | None]:
        return {
            "pixel_size_nm": self.pixel_size_nm,
            "fps": self.fps,
            "exposure_s": self.exposure_s,
            "dose_rate_e_per_A2s": self.dose_rate_e_per_A2s,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Calibration:
        def num(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(num("pixel_size_nm"), num("fps"), num("exposure_s"), num("dose_rate_e_per_A2s"))


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Metadata of one acquisition series (one recording / one camera run)."""

    series_id: str
    shape: tuple[int, int]  # (rows, columns)
    dtype: str
    calibration: Calibration = field(default_factory=Calibration)
    metadata: Mapping[str, Any] = field(default_factory=dict)  # JSON-able extras (source path, preset...)


@dataclass(frozen=True, slots=True)
class Frame:
    """One detector frame.

    ``pixels`` is a 2-D array (rows, columns) that may be a read-only view of a
    network buffer: consumers must copy before writing. ``timestamp_s`` is the
    acquisition time on the wall clock (``time.time()`` seconds) as stamped by
    the detector or the replaying source; latency is measured from it.
    ``index`` is 0-based and strictly increasing within a series; gaps mean
    frames dropped upstream.
    """

    series_id: str
    index: int
    timestamp_s: float
    pixels: np.ndarray
    calibration: Calibration = field(default_factory=Calibration)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


def check_dtype(dtype: str) -> np.dtype:
    """Return the numpy dtype for a wire dtype string, or raise ``ValueError``."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"unsupported dtype {dtype!r}") from exc
    if resolved.str not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; supported: {', '.join(SUPPORTED_DTYPES)}")
    return resolved


def check_shape(shape: Any) -> tuple[int, int]:
    """Validate a (rows, columns) shape from untrusted input."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 2:
        raise ValueError(f"shape must be [rows, columns], got {shape!r}")
    rows, cols = shape
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rows, cols)):
        raise ValueError(f"shape entries must be integers, got {shape!r}")
    if not (0 < rows <= MAX_FRAME_EDGE_PX and 0 < cols <= MAX_FRAME_EDGE_PX):
        raise ValueError(f"absurd shape {shape!r}: each edge must be 1..{MAX_FRAME_EDGE_PX} px")
    return (rows, cols)
