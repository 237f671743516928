"""Ingest throughput: the service's ZeroMQ source versus a bare pyzmq receive loop, same run.

A sender process pushes 1024x1024 uint16 frames (wire protocol v1) over tcp
loopback as fast as it can; the receiver alternates between the bare loop
(`recv_multipart(copy=False)` + `np.frombuffer`) and `ZmqFrameSource` (which
also validates the header, checks indices and counts gaps), several rounds
each. Prints a table and a final JSON line with both rates and their ratio.

    python tools/bench_ingest.py [--frames 2000] [--rounds 3] [--size 1024]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time

import numpy as np
import zmq

from sam4em_live.sources.zmq_source import ZmqFrameSource
from sam4em_live.wire import encode_frame


def _sender(endpoint: str, n_frames: int, size: int, series: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 64)
    sock.connect(endpoint)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4000, (size, size), dtype=np.uint16) for _ in range(8)]
    for i in range(n_frames):
        # Fresh header per frame; the pixel arrays are never written after being handed to ZeroMQ.
        sock.send_multipart(encode_frame(pool[i % len(pool)], series, i, time.time()), copy=False)
    sock.close(linger=-1)
    ctx.term()


def _bare(endpoint: str, n: int, size: int) -> float:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 64)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    proc = mp.Process(target=_sender, args=(f"tcp://127.0.0.1:{port}", n, size, "bare"))
    proc.start()
    parts = sock.recv_multipart(copy=False)  # first frame starts the clock
    t0 = time.perf_counter()
    for _ in range(n - 1):
        parts = sock.recv_multipart(copy=False)
        np.frombuffer(parts[1].buffer, dtype="<u2").reshape(size, size)
    rate = (n - 1) / (time.perf_counter() - t0)
    proc.join()
    sock.close(linger=0)
    return rate


def _ours(n: int, size: int) -> float:
    src = ZmqFrameSource("tcp://127.0.0.1:0", socket_kind="pull", mode="bind", rcvhwm_frames=64)
    src.open()
    proc = mp.Process(target=_sender, args=(src.endpoint, n, size, "ours"))
    proc.start()
    while src.next_frame(0.1) is None:
        pass
    t0 = time.perf_counter()
    got = 1
    while got < n:
        if src.next_frame(0.1) is not None:
            got += 1
    rate = (n - 1) / (time.perf_counter() - t0)
    proc.join()
    assert src.counters.rejected == 0 and src.counters.gaps == 0
    src.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    bare, ours = [], []
    for r in range(args.rounds):
        bare.append(_bare("", args.frames, args.size))
        ours.append(_ours(args.frames, args.size))
        print(f"round {r}: bare {bare[-1]:8.1f} fps   ZmqFrameSource {ours[-1]:8.1f} fps")
    b, o = statistics.median(bare), statistics.median(ours)
    mb = args.size * args.size * 2 / 1e6
    print(f"median: bare {b:.1f} fps ({b * mb:.0f} MB/s), ours {o:.1f} fps ({o * mb:.0f} MB/s), ratio {o / b:.3f}")
    print(json.dumps({"benchmark": "ingest", "frame": f"{args.size}x{args.size} uint16", "frames": args.frames,
                      "rounds": args.rounds, "bare_pyzmq_fps": round(b, 1), "zmq_frame_source_fps": round(o, 1),
                      "ratio": round(o / b, 3)}))


if __name__ == "__main__":
    main()
