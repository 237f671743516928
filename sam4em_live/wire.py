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
#: Calibration values above this are refused: no detector has them, and they overflow downstream arithmetic.
_MAX_CALIBRATION_VALUE = 1e9
#: |timestamp_s| above this (year ~33700 as Unix time) is refused as garbage.
_MAX_ABS_TIMESTAMP_S = 1e12

#: Largest frame index accepted: exact as a float64 and as a JSON number in any client, and far beyond
#: any real series (2**53 frames at 10 kHz is 28,000 years). Larger ones are `implausible_index`.
MAX_FRAME_INDEX = 2**53 - 1
#: Default of `FrameDecoder.max_index_jump`: frames may skip at most this many indices (~8 min at 200 fps).
DEFAULT_MAX_INDEX_JUMP = 100_000
#: Consecutive, mutually consistent frames beyond the window after which the decoder believes the jump.
DEFAULT_RESYNC_FRAMES = 8
#: Metadata maps nest at most this deep (the decoder walks them; JSON sinks write them).
_MAX_METADATA_DEPTH = 8


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
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:
        raise RejectedMessage("header_too_large", f"{size} bytes > limit {max_bytes}")
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
        raise RejectedMessage("bad_protocol", f"protocol {_short(header.get('protocol'))} != {PROTOCOL_ID!r}")
    if header.get("version") != PROTOCOL_VERSION:
        raise RejectedMessage("unknown_version", f"version {_short(header.get('version'))} (we speak {PROTOCOL_VERSION})")
    kind = header.get("type")
    if kind not in (MSG_FRAME, MSG_SERIES_START, MSG_SERIES_END):
        raise RejectedMessage("bad_type", f"message type {_short(kind)}")
    series_id = header.get("series_id")
    if not isinstance(series_id, str) or not 0 < len(series_id) <= 256:
        raise RejectedMessage("bad_field", f"series_id must be a string of 1..256 characters, got {_short(series_id)}")
    return kind


def _calibration(header: dict[str, Any]) -> Calibration:
    values: dict[str, float | None] = {}
    for key in _CALIBRATION_KEYS:
        value = header.get(key)
        if value is not None:
            number = _finite_float(value)
            if number is None or not 0 < number <= _MAX_CALIBRATION_VALUE:
                raise RejectedMessage("bad_field", f"{key} must be a number in (0, 1e9], got {_short(value)}")
            value = number
        values[key] = value
    return Calibration(**values)


def _finite_float(value: object) -> float | None:
    """``value`` as a finite float if it is an int or float that is one (bool is not a number here), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond 1e308
        return None
    return number if math.isfinite(number) else None


def _short(value: object) -> str:
    """``repr`` cut to a loggable length (a hostile header may hold a 64 KiB string)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_metadata(value: object) -> dict[str, Any]:
    """Series metadata must be a JSON-able map: it is written to ``run.json`` and published as-is."""
    if not isinstance(value, dict):
        raise RejectedMessage("bad_field", "metadata must be a map")
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:  # iterative: no recursion limit to reach
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = list(item.values())
            if not all(isinstance(k, str) for k in item):
                raise RejectedMessage("bad_field", "metadata keys must be strings")
        elif isinstance(item, list):
            children = item
        else:
            if not (item is None or isinstance(item, (str, bool)) or _finite_float(item) is not None):
                raise RejectedMessage("bad_field", f"metadata value {_short(item)} is not JSON-able")
            continue
        if depth > _MAX_METADATA_DEPTH:
            raise RejectedMessage("bad_field", f"metadata nests deeper than {_MAX_METADATA_DEPTH}")
        pending.extend((child, depth + 1) for child in children)
    return value


def _shape_dtype(header: dict[str, Any]) -> tuple[tuple[int, int], np.dtype]:
    try:
        dtype = check_dtype(header.get("dtype"))
    except ValueError as exc:
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
    `RejectedMessage` -- and nothing else, whatever the bytes. It also counts gaps
    (indices skipped upstream).

    Frame index window: a frame more than ``max_index_jump`` indices past the last
    accepted one (or above `MAX_FRAME_INDEX`) is rejected as ``implausible_index``
    and does *not* become the last index, so one corrupt header cannot make every
    later frame ``non_monotonic``. Frames that do not fit (too far ahead, or behind
    the last index) are believed once ``resync_frames`` of them arrive in a row,
    each 1..``max_index_jump`` after the one before: a sender whose counter really
    jumped, or restarted from 0 under the same series id, or a corrupt *first* frame
    of a series that set the last index far ahead. The frame completing such a run
    re-anchors the series there (``index_resyncs`` counts it; the indices skipped
    are not gaps: nobody knows how many frames they were). An index that goes back
    is a new series to the statistics (`stats.rolling`), as a new series id is.
    """

    max_header_bytes: int = 65536
    max_index_jump: int = DEFAULT_MAX_INDEX_JUMP
    resync_frames: int = DEFAULT_RESYNC_FRAMES
    series: SeriesInfo | None = None
    last_index: int | None = None
    gaps: int = 0
    gap_events: list[tuple[int, int]] = field(default_factory=list)  # (from, to) of the latest gaps
    index_resyncs: int = 0
    _beyond_window: list[int] = field(default_factory=list)  # the current run of out-of-window indices
    _anchor_support: int = 0  # frames accepted in a row since the last index was (re-)anchored

    def decode(self, parts: Sequence[Any]) -> Frame | SeriesStart | SeriesEnd:
        """Decode one multipart message (parts as received); raise `RejectedMessage` for anything malformed."""
        try:
            n_parts = len(parts)
        except TypeError:
            raise RejectedMessage("part_count", f"parts is a {type(parts).__name__}, not a list") from None
        if n_parts not in (1, 2):
            raise RejectedMessage("part_count", f"{n_parts} parts (expected 1 or 2)")
        header = unpack_header(_as_buffer(parts[0]), self.max_header_bytes)
        kind = _check_protocol(header)
        if kind == MSG_FRAME:
            if n_parts != 2:
                raise RejectedMessage("part_count", "frame message without its pixel part")
            return self._frame(header, parts[1])
        if n_parts != 1:
            raise RejectedMessage("part_count", f"{kind} message must have 1 part, got {n_parts}")
        if kind == MSG_SERIES_START:
            return self._series_start(header)
        n = header.get("n_frames")
        valid_n = isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_FRAME_INDEX
        return SeriesEnd(header["series_id"], n if valid_n else None)

    def _series_start(self, header: dict[str, Any]) -> SeriesStart:
        shape, dtype = _shape_dtype(header)
        metadata = _check_metadata(header.get("metadata") or {})
        self.series = SeriesInfo(header["series_id"], shape, dtype.str, _calibration(header), metadata)
        self._restart_indices()
        return SeriesStart(self.series)

    def _frame(self, header: dict[str, Any], payload: Any) -> Frame:
        shape, dtype = _shape_dtype(header)
        index = header.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise RejectedMessage("bad_field", f"index must be an integer >= 0, got {_short(index)}")
        stamp = _finite_float(header.get("timestamp_s"))
        if stamp is None or abs(stamp) > _MAX_ABS_TIMESTAMP_S:
            raise RejectedMessage("bad_field", "timestamp_s must be a finite number (|t| <= 1e12 s), "
                                  f"got {_short(header.get('timestamp_s'))}")
        buffer = _as_buffer(payload)
        expected = shape[0] * shape[1] * dtype.itemsize
        if buffer.nbytes != expected:
            raise RejectedMessage(
                "size_mismatch", f"buffer {buffer.nbytes} bytes != {shape[0]}x{shape[1]}x{dtype.itemsize} = {expected}"
            )
        calibration = _calibration(header)
        series_id = header["series_id"]
        if self.series is None or self.series.series_id != series_id:
            # A frame from a series we never saw start (we joined late, or a
            # publisher restarted without a start message): adopt it.
            self.series = SeriesInfo(series_id, shape, dtype.str, calibration, {"implicit": True})
            self._restart_indices()
        self._check_index(index)
        pixels = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        return Frame(series_id, index, stamp, pixels, self.series.calibration.merged(calibration))

    def _restart_indices(self) -> None:
        self.last_index = None
        self._beyond_window.clear()
        self._anchor_support = 0

    def _check_index(self, index: int) -> None:
        if index > MAX_FRAME_INDEX:
            raise RejectedMessage("implausible_index", f"frame index {_short(index)} > {MAX_FRAME_INDEX}")
        last = self.last_index
        if last is not None:
            if index == last:
                raise RejectedMessage("repeated_index", f"frame index {index} repeated")
            behind = index < last
            if behind or index - last > self.max_index_jump:
                if not self._believe_jump(index):
                    if behind:
                        raise RejectedMessage("non_monotonic", f"frame index {index} after {last}")
                    raise RejectedMessage(
                        "implausible_index", f"frame index {index} jumps {index - last} past {last} "
                        f"(window {self.max_index_jump})")
            elif index > last + 1:
                self.gaps += index - last - 1
                self.gap_events.append((last, index))
                del self.gap_events[:-16]
            self._anchor_support += 1
        else:
            self._anchor_support = 1  # the series' first frame: one witness for where its indices are
        self._beyond_window.clear()
        self.last_index = index

    def _believe_jump(self, index: int) -> bool:
        """Track runs of indices that do not fit; True when this one completes a consistent run.

        A run is believed at ``resync_frames`` frames, or as soon as it has more frames than the current
        anchor has had in a row: a corrupt *first* frame of a series (one witness) then costs one valid
        frame, not ``resync_frames - 1``, while a series followed for a while still needs the full run.
        """
        run = self._beyond_window
        if run and not 0 < index - run[-1] <= self.max_index_jump:
            run.clear()  # not a continuation of the previous far-away frames: a new run
        run.append(index)
        if len(run) < min(self.resync_frames, max(self._anchor_support + 1, 2)):
            return False
        self.index_resyncs += 1
        self._anchor_support = len(run) - 1  # counted up to the run's length with this frame, below
        return True


def _as_buffer(part: Any) -> memoryview:
    """A flat read-only byte view of a message part (zmq.Frame, bytes, or array) without copying."""
    try:
        buffer = getattr(part, "buffer", None)  # zmq.Frame
        if buffer is None:
            buffer = part.reshape(-1).data if isinstance(part, np.ndarray) else memoryview(part)
        view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except (TypeError, ValueError, AttributeError, BufferError) as exc:
        raise RejectedMessage("part_not_bytes", f"a message part is a {type(part).__name__}: {exc}") from None

