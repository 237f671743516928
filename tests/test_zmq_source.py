"""ZeroMQ source over real loopback sockets: receive, reject-and-continue, stop promptly, reconnect."""

from __future__ import annotations

import logging
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from sam4em_live.config import ZmqSourceConfig
from sam4em_live.frames import SeriesInfo
from sam4em_live.sources.base import EndOfStream
from sam4em_live.sources.camera import FramePublisher
from sam4em_live.sources.zmq_source import ZmqFrameSource
from sam4em_live.wire import encode_frame, encode_series_end


def _receive(source, n, timeout_s=5.0):
    frames, deadline = [], time.monotonic() + timeout_s
    while len(frames) < n and time.monotonic() < deadline:
        frame = source.next_frame(0.05)
        if frame is not None:
            frames.append(frame)
    return frames


@pytest.fixture
def pub_and_source():
    pub = FramePublisher("tcp://127.0.0.1:0")
    src = ZmqFrameSource(pub.endpoint)
    src.open()
    time.sleep(0.3)  # slow joiner
    yield pub, src
    src.close()
    pub.close()


@pytest.mark.parametrize("shape,dtype", [((1024, 1024), np.uint16), ((64, 48), np.uint8), ((33, 17), np.float32)])
def test_frames_arrive_intact(pub_and_source, shape, dtype):
    pub, src = pub_and_source
    rng = np.random.default_rng(1)
    sent = [(rng.random(shape) * 200).astype(dtype) for _ in range(5)]
    pub.send_series_start(SeriesInfo("s", shape, np.dtype(dtype).str))
    for i, px in enumerate(sent):
        pub.send_frame(px, "s", i, 100.0 + i)
    frames = _receive(src, 5)
    assert [f.index for f in frames] == list(range(5))
    for f, px in zip(frames, sent, strict=False):
        np.testing.assert_array_equal(f.pixels, px)
    assert src.series.shape == shape and src.counters.series_started == 1


def test_malformed_messages_are_counted_and_stream_goes_on(pub_and_source):
    pub, src = pub_and_source
    good = np.zeros((4, 4), np.uint16)
    pub.send_frame(good, "s", 0)
    pub.send_raw([b"not msgpack \xc1", b"xx"])
    pub.send_raw([msgpack.packb({"protocol": "sam4em-frame", "version": 9}), b"x"])
    pub.send_raw([b"a", b"b", b"c"])
    pub.send_frame(good, "s", 0)  # repeated
    pub.send_frame(good, "s", 3)  # gap of 2
    frames = _receive(src, 2)
    assert [f.index for f in frames] == [0, 3]
    reasons = src.counters.rejected_by_reason
    assert reasons == {"header_not_msgpack": 1, "unknown_version": 1, "part_count": 1, "repeated_index": 1}
    assert src.counters.gaps == 2


def test_next_frame_never_blocks_beyond_timeout(pub_and_source):
    _, src = pub_and_source
    t0 = time.monotonic()
    assert src.next_frame(0.05) is None
    assert time.monotonic() - t0 < 0.2


def test_reconnects_when_publisher_restarts():
    pub = FramePublisher("tcp://127.0.0.1:0")
    endpoint = pub.endpoint
    src = ZmqFrameSource(endpoint)
    src.open()
    time.sleep(0.3)
    pub.send_frame(np.ones((8, 8), np.uint16), "run1", 0)
    assert len(_receive(src, 1)) == 1
    pub.close()
    time.sleep(0.3)
    pub2 = FramePublisher(endpoint)  # same port, new process in real life
    try:
        got = []
        deadline = time.monotonic() + 5
        i = 0
        while not got and time.monotonic() < deadline:
            pub2.send_frame(np.full((8, 8), 2, np.uint16), "run2", i)
            i += 1
            got = _receive(src, 1, 0.2)
        assert got and got[0].series_id == "run2" and got[0].pixels[0, 0] == 2
    finally:
        src.close()
        pub2.close()


def test_pull_bind_mode_and_series_end():
    src = ZmqFrameSource("tcp://127.0.0.1:0", socket_kind="pull", mode="bind", stop_at_series_end=True)
    src.open()
    assert not src.endpoint.endswith(":0")
    push = zmq.Context.instance().socket(zmq.PUSH)  # a detector pushing to our bound PULL
    push.connect(src.endpoint)
    push.send_multipart(encode_frame(np.ones((4, 4), np.uint8), "p", 0, 1.0))
    push.send_multipart(encode_series_end("p", 1))
    assert len(_receive(src, 1)) == 1
    with pytest.raises(EndOfStream):  # noqa: PT012 - the end arrives after some polls
        for _ in range(50):
            src.next_frame(0.05)
    push.close(linger=0)
    src.close()


def test_stop_event_honoured_within_100ms(pub_and_source):
    _, src = pub_and_source
    stop = threading.Event()
    done = threading.Event()

    def loop():
        while not stop.is_set():
            src.next_frame(0.05)
        done.set()

    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    stop.set()
    assert done.wait(1.0)
    assert time.monotonic() - t0 < 0.1
    t.join()


def _bind_warnings(endpoint, caplog):
    src = ZmqFrameSource(endpoint, socket_kind="pull", mode="bind")
    with caplog.at_level(logging.WARNING, logger="sam4em_live.sources.zmq_source"):
        src.open()
    src.close()
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_binding_beyond_loopback_warns_loudly(caplog):
    (message,) = _bind_warnings("tcp://0.0.0.0:0", caplog)
    assert "beyond loopback" in message and "ANY host" in message and "docs/protocol.md" in message


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:0", "tcp://localhost:0", "inproc://frames-test"])
def test_binding_loopback_is_quiet(endpoint, caplog):
    assert _bind_warnings(endpoint, caplog) == []


def test_index_window_from_config_and_one_bad_index_costs_one_frame():
    config = ZmqSourceConfig(endpoint="tcp://127.0.0.1:0", socket="pull", mode="bind", max_index_jump=50)
    src = ZmqFrameSource.from_config(config)
    src.open()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(src.endpoint)
    try:
        px = np.ones((4, 4), np.uint8)
        for i in [0, 1, 52, 2, 3, 2**63, *range(4, 100)]:  # 52 is 51 past 1: beyond a window of 50
            push.send_multipart(encode_frame(px, "w", i, 1.0) if i < 2**62 else [
                msgpack.packb({"protocol": "sam4em-frame", "version": 1, "type": "frame", "series_id": "w",
                               "index": i, "timestamp_s": 1.0, "shape": [4, 4], "dtype": "|u1"}), px.tobytes()])
        frames = _receive(src, 100, timeout_s=5.0)
        assert [f.index for f in frames] == list(range(100))
        assert src.counters.rejected_by_reason == {"implausible_index": 2}
    finally:
        push.close(linger=0)
        src.close()
