"""Frames and series metadata: what flows out of every `FrameSource`.

Coordinates everywhere in sam4em-live are pixels with x = column, y = row and the
origin at the centre of the top-left pixel. Physical units are carried explicitly
(`pixel_size_nm`, `fps`); nothing downstream assumes a default calibration.

Time: a run's acquisition time axis (``t_s``) comes from one `TimeBase`, chosen from what the source
declares (`SeriesInfo.time_base`): the frame rate (a file's frame interval, a header's fps, ``--fps``),
the detector's per-frame timestamps, or nothing (time in frames). It never comes from the processing
clock: a replay stamps frames when it hands them on, which says how fast we read, not when they were
acquired.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
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


class TimeBase(StrEnum):
    """Where a series' acquisition times (the ``t_s`` column) come from, in order of preference."""

    FPS = "fps"  # t_s = frame / fps: a file's frame interval, a header's fps or the user's --fps
    DETECTOR_TIMESTAMPS = "detector_timestamps"  # t_s = timestamp_s - the first recorded frame's timestamp_s
    FRAMES = "frames"  # no acquisition time known: t_s left empty, time is counted in frames

    @property
    def unit(self) -> str:
        """The unit a time on this base is given in: ``"s"``, or ``"frame"`` without acquisition times."""
        return "frame" if self is TimeBase.FRAMES else "s"


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Metadata of one acquisition series (one recording / one camera run).

    The source declares what its frames' ``timestamp_s`` mean. ``acquisition_timestamps``: they are
    acquisition times on the detector's clock (a camera on the wire); False for a replay of a file
    that records no per-frame times, whose timestamps are only when the replay emitted each frame.
    ``live``: frames arrive at their acquisition pace (a camera, a paced replay), so the camera rate,
    the latency and ``processing_slow`` mean something; False for an offline run read as fast as the
    pipeline takes frames.
    """

    series_id: str
    shape: tuple[int, int]  # (rows, columns)
    dtype: str
    calibration: Calibration = field(default_factory=Calibration)
    metadata: Mapping[str, Any] = field(default_factory=dict)  # JSON-able extras (source path, preset...)
    acquisition_timestamps: bool = True
    live: bool = True

    @property
    def time_base(self) -> TimeBase:
        """The frame rate when known (exact, gap-proof), else the detector's timestamps, else frames."""
        if self.calibration.fps:
            return TimeBase.FPS
        return TimeBase.DETECTOR_TIMESTAMPS if self.acquisition_timestamps else TimeBase.FRAMES


@dataclass(frozen=True, slots=True)
class Frame:
    """One detector frame.

    ``pixels`` is a 2-D array (rows, columns) that may be a read-only view of a
    network buffer: consumers must copy before writing. ``timestamp_s`` is a
    wall-clock time (``time.time()`` seconds) stamped by the detector at
    acquisition, or by a replaying source when it emitted the frame (the
    series says which: `SeriesInfo.acquisition_timestamps`); latency is
    measured from it, acquisition times only from the first kind.
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


class AcquisitionClock:
    """Acquisition time ``t_s`` of each frame of one series, on its `TimeBase`: the one place it is computed.

    `FPS`: ``index / fps`` (seconds since frame 0). `DETECTOR_TIMESTAMPS`: seconds since the first frame
    given to `t_s`. `FRAMES`: None (no acquisition time is known; consumers count frames).
    """

    def __init__(self, base: TimeBase, fps: float | None = None) -> None:
        if base is TimeBase.FPS and not fps:
            raise ValueError("the fps time base needs a frame rate")
        self.base = base
        self.fps = fps
        self._first_timestamp_s: float | None = None

    @classmethod
    def of(cls, series: SeriesInfo) -> AcquisitionClock:
        return cls(series.time_base, series.calibration.fps)

    def t_s(self, index: int, timestamp_s: float) -> float | None:
        """Seconds of frame ``index`` (stamped ``timestamp_s``) on this clock; None on the `FRAMES` base."""
        if self.base is TimeBase.FRAMES:
            return None
        if self.base is TimeBase.FPS and self.fps:  # the constructor insists on a rate for this base
            return index / self.fps
        if self._first_timestamp_s is None:
            self._first_timestamp_s = timestamp_s
        return timestamp_s - self._first_timestamp_s


def _dtype_spellings() -> dict[str, np.dtype]:
    """Every accepted way to write a supported dtype: ``<u2``, ``u2``, ``=u2``, ``uint16``, ``H``..."""
    table: dict[str, np.dtype] = {}
    for canonical in SUPPORTED_DTYPES:
        dtype = np.dtype(canonical)
        code = canonical[1:]
        native = ("=" + code,) if np.little_endian else ()  # "=" is the host's order
        for spelling in (canonical, code, "<" + code, *native, dtype.name, dtype.char):
            table[spelling] = dtype
    return table


#: Looked up, never parsed: numpy's dtype parser raises SyntaxError, TypeError, DeprecationWarning...
#: on hostile strings ("(,,", "(2,3", "a"), and a structured or subarray spec can allocate without bound.
_DTYPE_SPELLINGS = _dtype_spellings()


def check_dtype(dtype: object) -> np.dtype:
    """Return the numpy dtype for a wire dtype string (or a dtype), or raise ``ValueError``.

    Untrusted input is only looked up in a fixed table of spellings, never handed to numpy's parser.
    """
    if isinstance(dtype, np.dtype):
        dtype = dtype.str
    resolved = _DTYPE_SPELLINGS.get(dtype) if isinstance(dtype, str) else None
    if resolved is None:
        shown = repr(dtype)[:40]
        raise ValueError(f"unsupported dtype {shown}; supported: {', '.join(SUPPORTED_DTYPES)}")
    return resolved


def check_shape(shape: Any) -> tuple[int, int]:
    """Validate a (rows, columns) shape from untrusted input."""
    shown = repr(shape)[:60]  # untrusted: maybe a 4096-item list
    if not isinstance(shape, (list, tuple)) or len(shape) != 2:
        raise ValueError(f"shape must be [rows, columns], got {shown}")
    rows, cols = shape
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rows, cols)):
        raise ValueError(f"shape entries must be integers, got {shown}")
    if not (0 < rows <= MAX_FRAME_EDGE_PX and 0 < cols <= MAX_FRAME_EDGE_PX):
        raise ValueError(f"absurd shape {shown}: each edge must be 1..{MAX_FRAME_EDGE_PX} px")
    return (rows, cols)


def count_non_finite(pixels: np.ndarray) -> int:
    """How many pixels are NaN or +-inf; 0 without looking for integer pixel types (they cannot be)."""
    if pixels.dtype.kind != "f":
        return 0
    finite = np.isfinite(pixels)
    # one vectorised pass (~0.1 ms on a 1024^2 float32 frame); the exact count only when something is wrong
    return 0 if finite.all() else int(pixels.size - np.count_nonzero(finite))


def fill_non_finite(pixels: np.ndarray) -> np.ndarray:
    """A copy of float ``pixels`` with every NaN/+-inf pixel set to the median of the finite ones.

    The median is taken over a strided sample of about 16k pixels (~0.7 ms for the whole repair of a
    1024^2 frame, against ~13 ms for an exact median): a robust background level, so a repaired pixel
    reads as background, never as a dark particle or a bright edge. The input (maybe a read-only network
    buffer) is not modified. All pixels non-finite: filled with 0.
    """
    finite = np.isfinite(pixels)
    flat = pixels.reshape(-1)
    sample = flat[:: max(1, flat.size // 16384)]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        sample = flat[finite.reshape(-1)]
    fill = np.median(sample) if sample.size else 0.0
    out = np.array(pixels, copy=True)
    np.copyto(out, out.dtype.type(fill), where=~finite)
    return out
