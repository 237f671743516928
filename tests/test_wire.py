"""Frame wire protocol v1: round trip and every malformed-message kind."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.wire import (
    FrameDecoder,
    RejectedMessage,
    SeriesEnd,
    SeriesStart,
    encode_frame,
    encode_series_end,
    encode_series_start,
)


def _bytes(parts):
    return [p if isinstance(p, bytes) else p.tobytes() for p in parts]


def test_round_trip_frame_and_series():
    dec = FrameDecoder()
    series = SeriesInfo("s1", (4, 6), "<u2", Calibration(pixel_size_nm=1.5, fps=80.0), {"k": "v"})
    start = dec.decode(encode_series_start(series))
    assert isinstance(start, SeriesStart) and start.series == series
    pixels = np.arange(24, dtype="<u2").reshape(4, 6)
    frame = dec.decode(_bytes(encode_frame(pixels, "s1", 0, 12.5, Calibration(exposure_s=0.01))))
    assert isinstance(frame, Frame)
    assert frame.index == 0 and frame.timestamp_s == 12.5 and frame.series_id == "s1"
    np.testing.assert_array_equal(frame.pixels, pixels)
    assert frame.calibration == Calibration(pixel_size_nm=1.5, fps=80.0, exposure_s=0.01)
    end = dec.decode(encode_series_end("s1", 1))
    assert end == SeriesEnd("s1", 1)


def test_receive_is_zero_copy():
    dec = FrameDecoder()
    parts = _bytes(encode_frame(np.ones((8, 8), "<u2"), "s", 0, 0.0))
    buf = bytearray(parts[1])
    frame = dec.decode([parts[0], buf])
    buf[0] = 7  # the frame is a view on the message buffer
    assert frame.pixels[0, 0] == 7


def test_big_endian_input_is_sent_little_endian():
    parts = encode_frame(np.arange(6, dtype=">u2").reshape(2, 3), "s", 0, 0.0)
    assert msgpack.unpackb(parts[0])["dtype"] == "<u2"
    frame = FrameDecoder().decode(_bytes(parts))
    np.testing.assert_array_equal(frame.pixels, np.arange(6).reshape(2, 3))


def _header(**over):
    base = {"protocol": "sam4em-frame", "version": 1, "type": "frame", "series_id": "s", "index": 0,
            "timestamp_s": 1.0, "shape": [2, 2], "dtype": "<u2"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


GOOD_PIXELS = np.zeros((2, 2), "<u2").tobytes()

MALFORMED = [
    ("part_count", [msgpack.packb(_header()), GOOD_PIXELS, b"extra"]),
    ("part_count", [msgpack.packb(_header())]),
    ("header_not_map", [msgpack.packb([1, 2, 3]), GOOD_PIXELS]),
    ("header_not_msgpack", [b"\xc1\xc1garbage", GOOD_PIXELS]),
    ("header_ext_type", [msgpack.packb(msgpack.ExtType(5, b"x")), GOOD_PIXELS]),
    ("header_too_large", [b"\x00" * 70000, GOOD_PIXELS]),
    ("bad_protocol", [msgpack.packb(_header(protocol="other")), GOOD_PIXELS]),
    ("unknown_version", [msgpack.packb(_header(version=2)), GOOD_PIXELS]),
    ("size_mismatch", [msgpack.packb(_header()), GOOD_PIXELS[:-1]]),
    ("unsupported_dtype", [msgpack.packb(_header(dtype="<c16")), GOOD_PIXELS]),
    ("unsupported_dtype", [msgpack.packb(_header(dtype="O")), GOOD_PIXELS]),
    ("absurd_shape", [msgpack.packb(_header(shape=[100000, 100000])), GOOD_PIXELS]),
    ("absurd_shape", [msgpack.packb(_header(shape=[2, 2, 2])), GOOD_PIXELS]),
    ("bad_field", [msgpack.packb(_header(index=-1)), GOOD_PIXELS]),
    ("bad_field", [msgpack.packb(_header(timestamp_s="now")), GOOD_PIXELS]),
    ("bad_field", [msgpack.packb(_header(pixel_size_nm=-1.0)), GOOD_PIXELS]),
    ("bad_type", [msgpack.packb(_header(type="pickle")), GOOD_PIXELS]),
]


@pytest.mark.parametrize("reason,parts", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_rejected_with_reason(reason, parts):
    with pytest.raises(RejectedMessage) as info:
        FrameDecoder().decode(parts)
    assert info.value.reason == reason


def test_repeated_and_non_monotonic_indices_rejected_and_gaps_counted():
    dec = FrameDecoder()
    send = lambda i: dec.decode([msgpack.packb(_header(index=i)), GOOD_PIXELS])  # noqa: E731
    send(0)
    send(1)
    with pytest.raises(RejectedMessage) as info:
        send(1)
    assert info.value.reason == "repeated_index"
    with pytest.raises(RejectedMessage) as info:
        send(0)
    assert info.value.reason == "non_monotonic"
    send(5)  # 2, 3, 4 dropped upstream
    assert dec.gaps == 3 and dec.gap_events[-1] == (1, 5)
    # a new series resets the index check
    dec.decode(encode_series_start(SeriesInfo("s2", (2, 2), "<u2")))
    assert dec.decode([msgpack.packb(_header(series_id="s2", index=0)), GOOD_PIXELS]).index == 0
