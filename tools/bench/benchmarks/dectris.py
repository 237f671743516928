"""DECTRIS ingest: `DectrisFrameSource` against a bare pyzmq receiver doing the same decoding, in one run.

A sender process (the stand-in detector, ``tools/dectris_standin``) binds a PUSH socket and sends a series
of ``size``² uint16 images as fast as the receiver takes them, in stream v1 (multipart JSON + blob) or
v2 (CBOR), raw or bitshuffle-LZ4 (messages encoded before the clock starts, so the sender is never the
bottleneck). The receiver alternates between the bare loop -- ``recv_multipart(copy=False)``, parse the
header (``json.loads`` / ``cbor2.loads``), decompress with the same library call (``dectris-compression``, or ``bitshuffle`` without it) -- and
the source (all of that plus message validation, series and gap bookkeeping, corrections), ``rounds``
rounds each. The ratio of the medians is the source's cost (target: >= 0.9).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.figures import integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping
    from multiprocessing.connection import Connection

CASES = (("v1", "none"), ("v1", "bslz4"), ("v2", "none"), ("v2", "bslz4"))


def _sender(stream: str, compression: str, n: int, size: int, conn: Connection) -> None:
    import zmq

    from tools.dectris_standin.publisher import DectrisStandIn, DetectorSettings

    standin = DectrisStandIn(stream, compression, "tcp://127.0.0.1:0",  # type: ignore[arg-type]
                             DetectorSettings(shape=(size, size)), sndhwm=64, context=zmq.Context())
    rng = np.random.default_rng(0)
    # Poisson counts, as a counting detector's frames are (they compress as real ones do); each image is
    # encoded (compressed) once, before the clock starts; per message only its number changes.
    images = [rng.poisson(20, (size, size)).astype(np.uint16) for _ in range(8)]
    v1_pool = [standin.image_message(1, i, image) for i, image in enumerate(images)]
    v2_pool = [standin.array_tag(image, compression) for image in images]
    conn.send(standin.endpoint)
    standin.arm(1, n)
    for i in range(n):
        if stream == "v1":  # the image number lives in the first JSON part
            header = json.dumps({"htype": "dimage-1.0", "series": 1, "frame": i, "hash": ""}).encode()
            parts = [header, *v1_pool[i % len(v1_pool)][1:]]
        else:
            parts = standin.v2_image_message(1, i, v2_pool[i % len(v2_pool)])
        standin.send(parts, timeout_s=60.0)
    standin.disarm(1)
    conn.poll(120.0)  # the receiver says when it has everything: closing earlier would drop queued images
    standin.close()


def _start_sender(stream: str, compression: str, n: int, size: int) -> tuple[mp.Process, Connection]:
    # spawn, not fork: bitshuffle runs OpenMP threads, and a child forked from a process that used them
    # deadlocks in its first bitshuffle call
    spawn = mp.get_context("spawn")
    ours, theirs = spawn.Pipe()
    sender = spawn.Process(target=_sender, args=(stream, compression, n, size, theirs), daemon=True)
    sender.start()
    return sender, ours


def _bare_decode(stream: str) -> Any:
    import bitshuffle
    import cbor2

    from sam4em_live.sources.dectris.compression import BSLZ4_BACKEND

    def bslz4(data: Any, dtype: np.dtype, shape: tuple[int, int]) -> np.ndarray:
        view = memoryview(data).cast("B")
        if BSLZ4_BACKEND == "dectris-compression":  # the library the source uses, called directly
            from dectris.compression import decompress

            return np.frombuffer(decompress(view, "bslz4", elem_size=dtype.itemsize), dtype).reshape(shape)
        block = int.from_bytes(view[8:12], "big") // dtype.itemsize
        return bitshuffle.decompress_lz4(np.frombuffer(view, np.uint8, offset=12), shape, dtype, block)

    def v1(parts: list[Any]) -> np.ndarray:
        json.loads(parts[0].bytes)
        detail = json.loads(parts[1].bytes)
        shape, dtype = (detail["shape"][1], detail["shape"][0]), np.dtype(detail["type"])
        if detail["encoding"] == "<":
            return np.frombuffer(parts[2].buffer, dtype).reshape(shape)
        return bslz4(parts[2].buffer, dtype, shape)

    def hook(*args: Any) -> Any:
        tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
        return tag.value

    def v2(parts: list[Any]) -> np.ndarray:
        message = cbor2.loads(parts[0].buffer, tag_hook=hook)
        dims, typed = next(iter(message["data"].values()))
        if isinstance(typed, bytes):
            return np.frombuffer(typed, "<u2").reshape(dims)
        payload = typed[2]
        return bslz4(payload, np.dtype("<u2"), tuple(dims))

    return v1 if stream == "v1" else v2


def _recv(sock: Any) -> list[Any]:
    if not sock.poll(30_000):  # never a bare blocking receive: a lost sender fails the run instead
        raise RuntimeError("no message from the DECTRIS stand-in for 30 s")
    parts: list[Any] = sock.recv_multipart(copy=False)
    return parts


def _bare_fps(stream: str, compression: str, n: int, size: int) -> tuple[float, float]:
    import zmq

    sender, conn = _start_sender(stream, compression, n, size)
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 64)
    sock.connect(conn.recv())
    decode = _bare_decode(stream)
    _recv(sock)  # the series header
    decode(_recv(sock))  # the first image starts the clock
    t0, cpu0 = time.perf_counter(), time.thread_time()
    for _ in range(n - 1):
        pixels = decode(_recv(sock))
    rate = (n - 1) / (time.perf_counter() - t0)
    cpu_ms = (time.thread_time() - cpu0) / (n - 1) * 1e3
    if pixels.shape != (size, size):
        raise RuntimeError(f"bare loop decoded {pixels.shape}")
    conn.send("done")
    sock.close(linger=0)
    sender.join(30)
    return rate, cpu_ms


def _source_fps(stream: str, compression: str, n: int, size: int) -> tuple[float, float]:
    from sam4em_live.sources.dectris.source import DectrisFrameSource, DectrisOptions

    sender, conn = _start_sender(stream, compression, n, size)
    options = DectrisOptions(endpoint=conn.recv(), stream=stream, magnification=1.0)  # type: ignore[arg-type]
    source = DectrisFrameSource(options)
    source.open()
    deadline = time.monotonic() + 60
    while source.next_frame(0.1) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no image from the DECTRIS stand-in")
    t0, cpu0 = time.perf_counter(), time.thread_time()
    got = 1
    while got < n:
        if source.next_frame(0.1) is not None:
            got += 1
        elif time.perf_counter() - t0 > 300:
            raise RuntimeError(f"{got} of {n} images; counters {source.counters.snapshot()}")
    rate = (n - 1) / (time.perf_counter() - t0)
    cpu_ms = (time.thread_time() - cpu0) / (n - 1) * 1e3
    conn.send("done")
    if source.counters.rejected or source.counters.gaps:
        raise RuntimeError(f"DectrisFrameSource rejected {source.counters.rejected}, gaps {source.counters.gaps}")
    source.close()
    sender.join(30)
    return rate, cpu_ms


def _decode_only_us(stream: str, compression: str, size: int, repeats: int = 200) -> tuple[float, float]:
    """Per-message CPU (us) of the bare decode and of the source's handling of the *same* received messages,
    in this process, alternating blocks of 20: the source's own cost without the transport's noise."""
    import zmq

    from sam4em_live.sources.dectris.source import DectrisFrameSource, DectrisOptions
    from tools.dectris_standin.publisher import DectrisStandIn, DetectorSettings

    standin = DectrisStandIn(stream, compression, settings=DetectorSettings(shape=(size, size)))  # type: ignore[arg-type]
    image = np.random.default_rng(0).poisson(20, (size, size)).astype(np.uint16)
    messages = [[zmq.Frame(p) for p in standin.image_message(1, i, image)] for i in range(20)]
    header = [zmq.Frame(p) for p in standin.header_message(1, repeats)]
    standin.close()
    source = DectrisFrameSource(DectrisOptions(stream=stream, magnification=1.0))  # type: ignore[arg-type]
    bare = _bare_decode(stream)
    bare_s = ours_s = 0.0
    logging.getLogger("sam4em_live.sources.dectris.source").setLevel(logging.ERROR)  # the re-arms below
    for _ in range(repeats // len(messages)):
        t = time.thread_time()
        for m in messages:
            bare(m)
        bare_s += time.thread_time() - t
        source._handle(header)  # a re-arm: the image numbers start again
        t = time.thread_time()
        for m in messages:
            source._handle(m)
        ours_s += time.thread_time() - t
    logging.getLogger("sam4em_live.sources.dectris.source").setLevel(logging.NOTSET)
    if source.counters.rejected:
        raise RuntimeError(f"source rejected {source.counters.rejected_by_reason}")
    n = (repeats // len(messages)) * len(messages)
    return bare_s / n * 1e6, ours_s / n * 1e6


@benchmark("dectris", "DectrisFrameSource vs a bare pyzmq + same-decompression loop, v1/v2 x raw/bslz4, "
           "1024² uint16 over tcp loopback (frames/s)", {"frames": 1000, "rounds": 3, "size": 1024},
           quick={"frames": 200, "rounds": 1})
def dectris(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    n, rounds, size = integer(params, "frames"), integer(params, "rounds"), integer(params, "size")
    metrics: dict[str, Metric] = {}
    for stream, compression in CASES:
        bare, ours, bare_cpu, ours_cpu = [], [], [], []
        for r in range(rounds):  # alternate which side goes first, so both see the same phases of the machine
            sides = (_bare_fps, _source_fps) if r % 2 == 0 else (_source_fps, _bare_fps)
            for side in sides:
                rate, cpu_ms = side(stream, compression, n, size)
                (bare if side is _bare_fps else ours).append(rate)
                (bare_cpu if side is _bare_fps else ours_cpu).append(cpu_ms)
        b, o = statistics.median(bare), statistics.median(ours)
        bc, oc = statistics.median(bare_cpu), statistics.median(ours_cpu)
        case = f"{stream}_{compression}"
        metrics[f"{case}_bare_fps"] = Metric(b, "frames/s", "higher")
        metrics[f"{case}_source_fps"] = Metric(o, "frames/s", "higher")
        metrics[f"{case}_source_over_bare"] = Metric(o / b, "ratio", "higher")
        # the receiving thread's CPU per frame (recv + parse + decompress [+ bookkeeping]): what a free core
        # sustains, much less at the mercy of the load than the wall-clock rate
        metrics[f"{case}_bare_cpu_ms"] = Metric(bc, "ms/frame", "lower")
        metrics[f"{case}_source_cpu_ms"] = Metric(oc, "ms/frame", "lower")
        metrics[f"{case}_source_over_bare_by_cpu"] = Metric(bc / oc, "ratio", "higher")
        bare_us, ours_us = _decode_only_us(stream, compression, size)
        metrics[f"{case}_decode_bare_us"] = Metric(bare_us, "us/message", "lower")
        metrics[f"{case}_decode_source_us"] = Metric(ours_us, "us/message", "lower")
    from sam4em_live.sources.dectris.compression import BSLZ4_BACKEND

    return Measurement(metrics, {"bslz4_backend": BSLZ4_BACKEND})
