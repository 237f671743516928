"""Frame wire protocol v1: round trip and every malformed-message kind."""

from __future__ import annotations

import contextlib

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


def _frame_parts(**over):
    return [msgpack.packb(_header(**over)), GOOD_PIXELS]


HOSTILE = [
    # numpy's dtype parser raises SyntaxError / TypeError / DeprecationWarning on these, or builds
    # structured and subarray types: the decoder never hands a wire string to it.
    *[("unsupported_dtype", _frame_parts(dtype=d)) for d in
      ("(,,", "(2,3", "a", "(2,)u2", "u2,u2", "V8", "S0", "M8[us]", "<c16", ">u2", "i999999999999", "")],
    *[("unsupported_dtype", _frame_parts(dtype=d)) for d in
      (5, 2.5, True, b"<u2", [["a", "<u2"]], {"names": ["a"], "formats": ["<u2"]})],
    ("unsupported_dtype", [msgpack.packb({k: v for k, v in _header().items() if k != "dtype"}), GOOD_PIXELS]),
    ("absurd_shape", _frame_parts(shape=[2.0, 2.0])),
    ("absurd_shape", _frame_parts(shape=[True, 2])),
    ("absurd_shape", _frame_parts(shape=[2**64 - 1, 2])),
    ("absurd_shape", _frame_parts(shape=list(range(4000)))),
    ("absurd_shape", _frame_parts(shape="2x2")),
    ("bad_field", _frame_parts(index=2.0)),
    ("bad_field", _frame_parts(index=True)),
    ("bad_field", _frame_parts(index="1")),
    ("bad_field", _frame_parts(index=-(2**63))),
    ("implausible_index", _frame_parts(index=2**63)),
    ("implausible_index", _frame_parts(index=2**64 - 1)),
    ("bad_field", _frame_parts(timestamp_s=float("nan"))),
    ("bad_field", _frame_parts(timestamp_s=float("inf"))),
    ("bad_field", _frame_parts(timestamp_s=1e300)),
    ("bad_field", _frame_parts(timestamp_s=[1.0])),
    ("bad_field", _frame_parts(fps=float("nan"))),
    ("bad_field", _frame_parts(fps=1e300)),
    ("bad_field", _frame_parts(pixel_size_nm=True)),
    ("bad_field", _frame_parts(series_id="")),
    ("bad_field", _frame_parts(series_id="x" * 257)),
    ("bad_field", _frame_parts(series_id=7)),
    ("bad_type", _frame_parts(type=["frame"])),
    ("bad_type", _frame_parts(type={"a": 1})),
    ("part_not_bytes", ["not bytes", GOOD_PIXELS]),
    ("part_not_bytes", [None, GOOD_PIXELS]),
    ("part_not_bytes", [msgpack.packb(_header()), 12345]),
    ("part_not_bytes", [msgpack.packb(_header()), np.zeros((2, 2), object)[:, :1]]),
    ("part_count", 42),
    ("part_count", []),
    ("header_not_msgpack", [b"\x91" * 5000, GOOD_PIXELS]),  # nested deeper than msgpack allows
    ("size_mismatch", [msgpack.packb(_header()), b""]),
]


@pytest.mark.parametrize("reason,parts", HOSTILE, ids=[f"{i}-{m[0]}" for i, m in enumerate(HOSTILE)])
def test_hostile_values_are_rejected_with_a_reason_never_another_exception(reason, parts):
    with pytest.raises(RejectedMessage) as info:
        FrameDecoder().decode(parts)
    assert info.value.reason == reason
    assert len(str(info.value)) < 400  # details are cut: a 64 KiB string never reaches a log line whole


def _series_start(**over):
    header = {"protocol": "sam4em-frame", "version": 1, "type": "series_start", "series_id": "s",
              "shape": [2, 2], "dtype": "<u2", **over}
    return [msgpack.packb(header)]


@pytest.mark.parametrize("metadata", [
    {"raw": b"\x00"},  # bytes: not JSON, run.json could not be written
    {b"key": 1},
    {"x": float("nan")},
    {"deep": [[[[[[[[[[1]]]]]]]]]]},
    [1, 2],
])
def test_series_metadata_must_be_json_able(metadata):
    with pytest.raises(RejectedMessage) as info:
        FrameDecoder().decode(_series_start(metadata=metadata))
    assert info.value.reason == "bad_field"


def test_json_able_metadata_and_dtype_spellings_accepted():
    dec = FrameDecoder()
    meta = {"preset": "demo", "n": 3, "ok": True, "none": None, "list": [1.5, "a", {"b": [2]}]}
    assert dec.decode(_series_start(metadata=meta)).series.metadata == meta
    for i, spelling in enumerate(("<u2", "u2", "=u2", "uint16", "H")):
        frame = dec.decode(_frame_parts(dtype=spelling, index=i))
        assert frame.pixels.dtype == np.dtype("<u2")


@pytest.mark.parametrize("n_frames,expected", [(5, 5), (True, None), (-1, None), ("5", None), (2**63, None)])
def test_series_end_count_is_kept_only_when_sane(n_frames, expected):
    header = {"protocol": "sam4em-frame", "version": 1, "type": "series_end", "series_id": "s", "n_frames": n_frames}
    assert FrameDecoder().decode([msgpack.packb(header)]).n_frames == expected


@pytest.mark.parametrize("bad_index", [2**63, 9 + 10**6, 2**53])
def test_one_implausible_index_does_not_poison_the_series(bad_index):
    dec = FrameDecoder()  # default window: 100,000 indices
    send = lambda i: dec.decode(_frame_parts(index=i))  # noqa: E731
    for i in range(10):
        send(i)
    with pytest.raises(RejectedMessage) as info:
        send(bad_index)
    assert info.value.reason == "implausible_index"
    assert [send(i).index for i in range(10, 110)] == list(range(10, 110))  # 100 of 100 accepted
    assert dec.gaps == 0 and dec.last_index == 109


def test_a_real_jump_beyond_the_window_is_followed_after_a_consistent_run():
    dec = FrameDecoder(max_index_jump=1000, resync_frames=8)
    send = lambda i: dec.decode(_frame_parts(index=i))  # noqa: E731
    for i in range(10):  # a series followed for a while: a jump needs the full run
        send(i)
    reasons = []
    for i in range(5000, 5008):
        try:
            send(i)
        except RejectedMessage as exc:
            reasons.append(exc.reason)
    assert reasons == ["implausible_index"] * 7  # the 8th in a row is believed
    assert dec.last_index == 5007 and dec.index_resyncs == 1 and dec.gaps == 0
    assert send(5009).index == 5009 and dec.gaps == 1


def test_scattered_far_indices_never_resync():
    dec = FrameDecoder(max_index_jump=1000, resync_frames=3)
    dec.decode(_frame_parts(index=0))
    for bad in (10**9, 10**12, 5 * 10**9, 10**15):  # far from each other: not one consistent run
        with pytest.raises(RejectedMessage, match="implausible_index"):
            dec.decode(_frame_parts(index=bad))
    assert dec.index_resyncs == 0 and dec.decode(_frame_parts(index=1)).index == 1


def test_zmq_source_config_default_window_is_the_decoders():
    from sam4em_live.config import ZmqSourceConfig
    from sam4em_live.wire import DEFAULT_MAX_INDEX_JUMP

    assert ZmqSourceConfig().max_index_jump == DEFAULT_MAX_INDEX_JUMP


def test_a_sender_restarting_from_zero_under_the_same_series_id_is_followed_after_a_run():
    dec = FrameDecoder(resync_frames=8)
    send = lambda i: dec.decode(_frame_parts(index=i))  # noqa: E731
    for i in range(500):
        send(i)
    reasons = []
    for i in range(20):
        try:
            send(i)
        except RejectedMessage as exc:
            reasons.append(exc.reason)
    assert reasons == ["non_monotonic"] * 7 and dec.last_index == 19 and dec.index_resyncs == 1


def test_a_corrupt_first_frame_costs_a_few_frames_not_the_series():
    dec = FrameDecoder(resync_frames=8)
    dec.decode(_series_start())
    dec.decode(_frame_parts(index=50_000))  # the first frame: nothing to compare it with, so it is taken
    accepted = []
    for i in range(1, 101):
        with contextlib.suppress(RejectedMessage):
            accepted.append(dec.decode(_frame_parts(index=i)).index)
    # Two frames in a row outnumber the one the first frame had: one valid frame is lost, not seven.
    assert accepted == list(range(2, 101)) and dec.index_resyncs == 1 and dec.gaps == 0


def test_a_second_frame_cannot_steal_a_confirmed_first_index():
    dec = FrameDecoder(resync_frames=8)
    dec.decode(_series_start())
    send = lambda i: dec.decode(_frame_parts(index=i))  # noqa: E731
    assert [send(0).index, send(1).index] == [0, 1]  # two witnesses
    for bad in (10**6, 10**6 + 1):  # a corrupt pair is not more than the anchor has
        with pytest.raises(RejectedMessage, match="implausible_index"):
            send(bad)
    assert send(2).index == 2 and dec.index_resyncs == 0
