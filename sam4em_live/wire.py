"""Frame wire protocol v1 (see docs/protocol.md).

A frame is a two-part ZeroMQ message: part 0 a msgpack map header, part 1 the
raw pixel buffer (C order, little-endian). Series start/end are one-part
messages (header only). msgpack is unpacked with size limits and with ext types
refused, so nothing in a message can make us execute or allocate without bound.
No pickle anywhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from sam4em_live.frames import Calibration, Frame, SeriesInfo, check_dtype, check_shape

if TYPE_CHECKING:
    from collections.abc import Sequence

PROTOCOL_ID = "sam4em-frame"
PROTOCOL_VERSION = 1
MSG_FRAME = "frame"
MSG_SERIES_START = "series_start"
MSG_SERIES_END = "series_end"

#: Frames at least this large are sent zero-copy; smaller ones are cheaper to copy.
ZERO_COPY_MIN_BYTES = 65536

_CALIBRATION_KEYS = ("pixel_size_nm", "fps", "exposure_s", "dose_rate_e_per_A2s")


class RejectedMessage(Exception):
    """A message we refuse. ``reason`` is a short stable key used for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SeriesStart:
    """A decoded series-start message."""

    series: SeriesInfo


@dataclass(frozen=True, slots=True)
class SeriesEnd:
    """A decoded series-end message (``n_frames`` when the sender knows it)."""

    series_id: str
    n_frames: int | None = None


# ---------------------------------------------------------------- encoding


def _header(kind: str, series_id: str, **fields: Any) -> dict[str, Any]:
    out = {"protocol": PROTOCOL_ID, "version": PROTOCOL_VERSION, "type": kind, "series_id": series_id}
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def encode_series_start(series: SeriesInfo) -> list[bytes]:
    """The one-part series-start message for ``series``."""
    header = _header(
        MSG_SERIES_START,
        series.series_id,
        shape=list(series.shape),
        dtype=np.dtype(series.dtype).str,
        metadata=dict(series.metadata),
        **series.calibration.as_dict(),
    )
    return [msgpack.packb(header, use_bin_type=True)]


def encode_series_end(series_id: str, n_frames: int | None = None) -> list[bytes]:
    """The one-part series-end message of ``series_id``."""
    return [msgpack.packb(_header(MSG_SERIES_END, series_id, n_frames=n_frames), use_bin_type=True)]


def encode_frame(
    pixels: np.ndarray,
    series_id: str,
    index: int,
    timestamp_s: float | None = None,
    calibration: Calibration | None = None,
) -> list[Any]:
    """Return the parts of a frame message: ``[header bytes, buffer]``.

    The buffer is the array itself (C-contiguous, little-endian) so that
    ``send_multipart(parts, copy=False)`` sends it without a copy. The caller
    must not modify ``pixels`` after sending (ZeroMQ may still be reading it);
    `FramePublisher` guarantees that by never reusing arrays.
    """
    if pixels.ndim != 2:
        raise ValueError(f"frames must be 2-D, got shape {pixels.shape}")
    arr = np.ascontiguousarray(pixels)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    dtype = check_dtype(arr.dtype.str)
    header = _header(
        MSG_FRAME,
        series_id,
        index=int(index),
        timestamp_s=float(time.time() if timestamp_s is None else timestamp_s),
        shape=[int(arr.shape[0]), int(arr.shape[1])],
        dtype=dtype.str,
        **(calibration or Calibration()).as_dict(),
    )
    return [msgpack.packb(header, use_bin_type=True), arr]


# ---------------------------------------------------------------- decoding


def _refuse_ext(code: int, data: bytes) -> Any:
    raise RejectedMessage("header_ext_type", f"msgpack ext type {code} is not allowed")


def unpack_header(data: bytes | memoryview, max_bytes: int) -> dict[str, Any]:
    """Unpack a msgpack map with hard limits; raise `RejectedMessage` otherwise."""
    if len(data) > max_bytes:
        raise RejectedMessage("header_too_large", f"{len(data)} bytes > limit {max_bytes}")
    try:
        header = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=4096,
            max_map_len=512,
            max_ext_len=64,  # small: ext_hook refuses every ext type anyway
        )
    except RejectedMessage:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise RejectedMessage("header_not_msgpack", f"cannot unpack header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise RejectedMessage("header_not_map", f"header is a {type(header).__name__}, not a map")
    return header


def _check_protocol(header: dict[str, Any]) -> str:
    if header.get("protocol") != PROTOCOL_ID:
        raise RejectedMessage("bad_protocol", f"protocol {header.get('protocol')!r} != {PROTOCOL_ID!r}")
    if header.get("version") != PROTOCOL_VERSION:
        raise RejectedMessage("unknown_version", f"version {header.get('version')!r} (we speak {PROTOCOL_VERSION})")
    kind = header.get("type")
    if kind not in (MSG_FRAME, MSG_SERIES_START, MSG_SERIES_END):
        raise RejectedMessage("bad_type", f"message type {kind!r}")
    series_id = header.get("series_id")
    if not isinstance(series_id, str) or not 0 < len(series_id) <= 256:
        raise RejectedMessage("bad_field", f"series_id must be a non-empty string, got {series_id!r}")
    return kind


def _calibration(header: dict[str, Any]) -> Calibration:
    values: dict[str, float | None] = {}
    for key in _CALIBRATION_KEYS:
        value = header.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise RejectedMessage("bad_field", f"{key} must be a positive number, got {value!r}")
            value = float(value)
        values[key] = value
    return Calibration(**values)


def _shape_dtype(header: dict[str, Any]) -> tuple[tuple[int, int], np.dtype]:
    try:
        dtype = check_dtype(header.get("dtype"))  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise RejectedMessage("unsupported_dtype", str(exc)) from None
    try:
        shape = check_shape(header.get("shape"))
    except ValueError as exc:
        raise RejectedMessage("absurd_shape", str(exc)) from None
    return shape, dtype


@dataclass
class FrameDecoder:
    """Stateful decoder: validates messages and tracks per-series frame indices.

    ``decode(parts)`` returns a `Frame`, `SeriesStart` or `SeriesEnd`, or raises
    `RejectedMessage`. It also counts gaps (indices skipped upstream).
    """

    max_header_bytes: int = 65536
    series: SeriesInfo | None = None
    last_index: int | None = None
    gaps: int = 0
    gap_events: list[tuple[int, int]] = field(default_factory=list)  # (from, to) of the latest gaps

    def decode(self, parts: Sequence[Any]) -> Frame | SeriesStart | SeriesEnd:
        if len(parts) not in (1, 2):
            raise RejectedMessage("part_count", f"{len(parts)} parts (expected 1 or 2)")
        header = unpack_header(_as_buffer(parts[0]), self.max_header_bytes)
        kind = _check_protocol(header)
        if kind == MSG_FRAME:
            if len(parts) != 2:
                raise RejectedMessage("part_count", "frame message without its pixel part")
            return self._frame(header, parts[1])
        if len(parts) != 1:
            raise RejectedMessage("part_count", f"{kind} message must have 1 part, got {len(parts)}")
        if kind == MSG_SERIES_START:
            return self._series_start(header)
        n = header.get("n_frames")
        return SeriesEnd(header["series_id"], n if isinstance(n, int) else None)

    def _series_start(self, header: dict[str, Any]) -> SeriesStart:
        shape, dtype = _shape_dtype(header)
        metadata = header.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise RejectedMessage("bad_field", "metadata must be a map")
        self.series = SeriesInfo(header["series_id"], shape, dtype.str, _calibration(header), metadata)
        self.last_index = None
        return SeriesStart(self.series)

    def _frame(self, header: dict[str, Any], payload: Any) -> Frame:
        shape, dtype = _shape_dtype(header)
        index = header.get("index")
        stamp = header.get("timestamp_s")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise RejectedMessage("bad_field", f"index must be an integer >= 0, got {index!r}")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
            raise RejectedMessage("bad_field", f"timestamp_s must be a finite number, got {stamp!r}")
        buffer = _as_buffer(payload)
        expected = shape[0] * shape[1] * dtype.itemsize
        if len(buffer) != expected:
            raise RejectedMessage(
                "size_mismatch", f"buffer {len(buffer)} bytes != {shape[0]}x{shape[1]}x{dtype.itemsize} = {expected}"
            )
        calibration = _calibration(header)
        series_id = header["series_id"]
        if self.series is None or self.series.series_id != series_id:
            # A frame from a series we never saw start (we joined late, or a
            # publisher restarted without a start message): adopt it.
            self.series = SeriesInfo(series_id, shape, dtype.str, calibration, {"implicit": True})
            self.last_index = None
        self._check_index(index)
        pixels = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        return Frame(series_id, index, float(stamp), pixels, self.series.calibration.merged(calibration))

    def _check_index(self, index: int) -> None:
        last = self.last_index
        if last is not None:
            if index == last:
                raise RejectedMessage("repeated_index", f"frame index {index} repeated")
            if index < last:
                raise RejectedMessage("non_monotonic", f"frame index {index} after {last}")
            if index > last + 1:
                self.gaps += index - last - 1
                self.gap_events.append((last, index))
                del self.gap_events[:-16]
        self.last_index = index


def _as_buffer(part: Any) -> memoryview:
    """A read-only view of a message part (zmq.Frame, bytes, or array) without copying."""
    buffer = getattr(part, "buffer", None)
    if buffer is not None:
        return buffer
    return memoryview(part).cast("B") if not isinstance(part, np.ndarray) else part.reshape(-1).data.cast("B")
