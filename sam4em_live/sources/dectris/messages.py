"""What a DECTRIS stream says, whatever its version: a series header, an image, a series end.

`stream_v1` (multipart JSON + binary) and `stream_v2` (one CBOR map per message) both decode into these
records, so the source (`sam4em_live.sources.dectris.source`) maps one vocabulary onto our series.
Lengths are SI as DECTRIS sends them: pixel sizes in metres, times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam4em_live.frames import MAX_FRAME_EDGE_PX, check_shape
from sam4em_live.sources.dectris.compression import PayloadError

#: Pixel types DECTRIS detectors send, by their stream v1 ``type`` name.
PIXEL_TYPES: dict[str, np.dtype] = {name: np.dtype(name).newbyteorder("<")
                                    for name in ("uint8", "uint16", "uint32", "int32", "float32")}


@dataclass(frozen=True, slots=True)
class DetectorHeader:
    """A series start (v1 ``dheader-1.0`` with its parts, v2 ``start``).

    ``series_number`` is the detector's series counter; ``series_unique_id`` the v2 unique id (None on v1).
    ``pixel_mask``: True where the detector flags a pixel (any bit of its 32-bit mask), (rows, columns);
    ``flatfield``: the detector's multiplicative flatfield; either None unless ``header_detail`` is ``all``.
    ``*_applied``: whether the detector itself already applied them (config ``pixel_mask_applied`` /
    ``flatfield_correction_applied`` in v1, ``pixel_mask_enabled`` / ``flatfield_enabled`` in v2).
    """

    series_number: int
    header_detail: str
    series_unique_id: str | None = None
    shape: tuple[int, int] | None = None  # (rows, columns) from the detector config
    x_pixel_size_m: float | None = None
    y_pixel_size_m: float | None = None
    frame_time_s: float | None = None
    count_time_s: float | None = None
    n_images: int | None = None
    pixel_mask: np.ndarray | None = None
    flatfield: np.ndarray | None = None
    pixel_mask_applied: bool = False
    flatfield_applied: bool = False
    appendix: dict[str, Any] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True, slots=True)
class DetectorImage:
    """One image: ``index`` is the detector's image number (``frame`` in v1, ``image_id`` in v2).

    ``start_time_s``: when the exposure started, in seconds since the series began (arm), if sent.
    ``pixels``: (rows, columns), maybe a read-only view of the network buffer.
    """

    series_number: int
    index: int
    pixels: np.ndarray
    start_time_s: float | None = None
    series_unique_id: str | None = None


@dataclass(frozen=True, slots=True)
class DetectorSeriesEnd:
    """The end of a series (v1 ``dseries_end-1.0``, v2 ``end``)."""

    series_number: int
    series_unique_id: str | None = None


DetectorMessage = DetectorHeader | DetectorImage | DetectorSeriesEnd


def require_int(value: object, name: str) -> int:
    """A non-negative integer field, or `PayloadError` ``bad_field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError("bad_field", f"{name} must be an integer >= 0, got {str(value)[:40]}")
    return value


def optional_float(value: object) -> float | None:
    """A positive finite float, or None for anything else (a missing or odd detector value is unknown)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    out = float(value)
    return out if np.isfinite(out) and out > 0 else None


def image_shape(x: object, y: object) -> tuple[int, int]:
    """(rows, columns) from DECTRIS's (x = width, y = height), each 1..16384."""
    if type(x) is int and type(y) is int and 0 < x <= MAX_FRAME_EDGE_PX and 0 < y <= MAX_FRAME_EDGE_PX:
        return (y, x)  # the common case, without building an error message
    try:
        return check_shape([y, x])
    except ValueError as exc:
        raise PayloadError("bad_shape", str(exc)) from None
