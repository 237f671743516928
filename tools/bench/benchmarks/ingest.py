"""Ingest throughput: the service's ZeroMQ source against a bare pyzmq receive loop, in the same run.

A sender process pushes ``size``² uint16 frames (wire protocol v1) over tcp loopback as fast as it can;
the receiver alternates between the bare loop (``recv_multipart(copy=False)`` + ``np.frombuffer``) and
`ZmqFrameSource` (header validation, index checks, gap counting), ``rounds`` rounds each. The ratio of
the medians is the source's cost (target: >= 0.9).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from typing import TYPE_CHECKING

import numpy as np

from tools.bench.figures import integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping


def _sender(endpoint: str, n_frames: int, size: int, series: str) -> None:
    import zmq

    from sam4em_live.wire import encode_frame

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 64)
    sock.connect(endpoint)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4000, (size, size), dtype=np.uint16) for _ in range(8)]
    for i in range(n_frames):
        # A fresh header per frame; the pixel arrays are never written after being handed to ZeroMQ.
        sock.send_multipart(encode_frame(pool[i % len(pool)], series, i, time.time()), copy=False)
    sock.close(linger=-1)
    ctx.term()


def _bare_fps(n: int, size: int) -> float:
    import zmq

    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 64)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sender = mp.Process(target=_sender, args=(f"tcp://127.0.0.1:{port}", n, size, "bare"))
    sender.start()
    sock.recv_multipart(copy=False)  # the first frame starts the clock
    t0 = time.perf_counter()
    for _ in range(n - 1):
        parts = sock.recv_multipart(copy=False)
        np.frombuffer(parts[1].buffer, dtype="<u2").reshape(size, size)
    rate = (n - 1) / (time.perf_counter() - t0)
    sender.join()
    sock.close(linger=0)
    return rate


def _source_fps(n: int, size: int) -> float:
    from sam4em_live.sources.zmq_source import ZmqFrameSource

    source = ZmqFrameSource("tcp://127.0.0.1:0", socket_kind="pull", mode="bind", rcvhwm_frames=64)
    source.open()
    sender = mp.Process(target=_sender, args=(source.endpoint, n, size, "ours"))
    sender.start()
    while source.next_frame(0.1) is None:
        pass
    t0 = time.perf_counter()
    got = 1
    while got < n:
        if source.next_frame(0.1) is not None:
            got += 1
    rate = (n - 1) / (time.perf_counter() - t0)
    sender.join()
    if source.counters.rejected or source.counters.gaps:
        raise RuntimeError(f"ZmqFrameSource rejected {source.counters.rejected}, gaps {source.counters.gaps}")
    source.close()
    return rate


@benchmark("ingest", "ZmqFrameSource vs a bare pyzmq loop, 1024² uint16 over tcp loopback (frames/s)",
           {"frames": 2000, "rounds": 3, "size": 1024}, quick={"frames": 1000, "rounds": 2})
def ingest(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    n, rounds, size = integer(params, "frames"), integer(params, "rounds"), integer(params, "size")
    bare, ours = [], []
    for _ in range(rounds):
        bare.append(_bare_fps(n, size))
        ours.append(_source_fps(n, size))
    b, o = statistics.median(bare), statistics.median(ours)
    return Measurement({
        "bare_pyzmq_fps": Metric(b, "frames/s", "higher"),
        "zmq_frame_source_fps": Metric(o, "frames/s", "higher"),
        "zmq_frame_source_MBps": Metric(o * size * size * 2 / 1e6, "MB/s", "higher"),
        "source_over_bare": Metric(o / b, "ratio", "higher"),
    })
