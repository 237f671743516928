"""Fault injection on the frame path, fast cases: hostile wire input, NaN frames, a spill that cannot be written.

Everything is real: a bound ZeroMQ PULL source on loopback (port 0) fed by a PUSH socket, the service with
the embedded backend, a spill directory on a 64 KiB tmpfs (root) or under RLIMIT_FSIZE (otherwise). The
slow campaigns (disk full on the run folder, SIGKILL, soaks) live in ``tools/chaos.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import resource
import subprocess
import time
import timeit
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import pytest
import zmq

from sam4em_live.config import ServiceConfig
from sam4em_live.control_api import ServiceState
from sam4em_live.frames import Calibration, Frame, SeriesInfo, count_non_finite, fill_non_finite
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.service.frame_queue import FrameQueue
from sam4em_live.sources.array_source import ArraySource
from sam4em_live.sources.camera import FramePublisher
from sam4em_live.sources.zmq_source import ZmqFrameSource
from tests.conftest import disk_video

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sam4em_live.results import FrameResult, RunInfo

PROTOCOL_DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
N_MESSAGES = 12_000


def documented_reasons() -> set[str]:
    """The reject reasons named in the first column of docs/protocol.md's reason table."""
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    table = text[text.index("| reason | cause |"):].split("\n\n")[0]
    return {name for line in table.splitlines()[2:] for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])}


# ---------------------------------------------------------------- hostile wire messages

_DTYPE_ALPHABET = "()<>|=,:[]{}'\" 0123456789uifcbhSUVOMmaHBIdf"
_HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**53, 2**63, 2**64 - 1, -(2**63), 0.0, -0.0, 1e-300, 1e308, -1e308,
    math.nan, math.inf, -math.inf, "", "x" * 300, "frame", "<u2", "(,,", "(2,3", b"\x00\x01", b"<u2", [],
    [1, 2, 3], [2, 2], [[2, 2]], [2.0, 2.0], ["2", "2"], {}, {"a": {"b": [1, {"c": None}]}}, [[[[[[[[[[1]]]]]]]]]],
]
_FIELDS = ["protocol", "version", "type", "series_id", "index", "timestamp_s", "shape", "dtype",
           "pixel_size_nm", "fps", "exposure_s", "dose_rate_e_per_A2s", "metadata", "n_frames"]


def _valid_frame(rng: random.Random, index: int) -> tuple[dict[str, Any], bytes]:
    rows, cols = rng.choice([(2, 3), (4, 4), (1, 8)])
    dtype = rng.choice(["|u1", "<u2", "<f4", "<f8", "<i4"])
    header = {"protocol": "sam4em-frame", "version": 1, "type": "frame", "series_id": "fuzz", "index": index,
              "timestamp_s": 1.0 + index, "shape": [rows, cols], "dtype": dtype}
    return header, bytes(rows * cols * np.dtype(dtype).itemsize)


def _random_dtype_string(rng: random.Random) -> str:
    return "".join(rng.choice(_DTYPE_ALPHABET) for _ in range(rng.randint(1, 8)))


def hostile_messages(n: int, seed: int = 18) -> Iterator[list[bytes]]:
    """``n`` malformed (and a few accidentally valid) multipart messages, the same ones for a given seed."""
    rng = random.Random(seed)
    index = 0
    for k in range(n):
        index += 1
        header, pixels = _valid_frame(rng, index)
        kind = k % 10
        if kind == 0:  # a field set to a value of the wrong type or range
            header[rng.choice(_FIELDS)] = rng.choice(_HOSTILE_VALUES)
        elif kind == 1:  # a dtype-like string: numpy's parser raises SyntaxError on some ("(,,", "(2,3")
            header["dtype"] = _random_dtype_string(rng)
        elif kind == 2:  # a field missing
            del header[rng.choice(list(header))]
        elif kind == 3:  # a pixel buffer too short, too long or empty
            pixels = pixels[: rng.randrange(len(pixels))] if rng.random() < 0.5 else pixels + b"\x00" * rng.randint(1, 99)
        elif kind == 4:  # extra parts, or none
            yield [msgpack.packb(header), pixels, *[b"x"] * rng.randint(1, 3)] if rng.random() < 0.7 else [
                msgpack.packb(header)]
            continue
        elif kind == 5:  # the packed header corrupted byte by byte, or cut short
            raw = bytearray(msgpack.packb(header))
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            yield [bytes(raw[: rng.randint(0, len(raw))] if rng.random() < 0.3 else raw), pixels]
            continue
        elif kind == 6:  # index games: far ahead, huge, repeated, backwards
            header["index"] = rng.choice([index + 10**6, 2**63, 2**53, index - 1, 0, index + 10**5 + 1])
        elif kind == 7:  # series messages with hostile content
            header["type"] = rng.choice(["series_start", "series_end"])
            header.pop("index", None)
            header[rng.choice(["metadata", "n_frames", "shape", "dtype", "fps"])] = rng.choice(_HOSTILE_VALUES)
            yield [msgpack.packb(header)] if rng.random() < 0.8 else [msgpack.packb(header), pixels]
            continue
        elif kind == 8:  # something that is not a map, or not msgpack at all
            yield [rng.choice([msgpack.packb([1, 2]), msgpack.packb("frame"), b"", bytes(rng.randrange(256)
                                                                                       for _ in range(20))]), pixels]
            continue
        else:  # extension types and oversized headers
            yield [rng.choice([msgpack.packb({"x": msgpack.ExtType(1, b"x"), **header}),
                               msgpack.packb({**header, "pad": "p" * 70_000})]), pixels]
            continue
        yield [msgpack.packb(header), pixels]


def test_ten_thousand_hostile_messages_are_all_counted_and_none_escapes():
    source = ZmqFrameSource("tcp://127.0.0.1:0", socket_kind="pull", mode="bind", rcvhwm_frames=N_MESSAGES + 10)
    source.open()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, N_MESSAGES + 10)
    push.connect(source.endpoint)
    t0 = time.monotonic()
    try:
        for parts in hostile_messages(N_MESSAGES):
            push.send_multipart(parts)
        counters = source.counters
        deadline = time.monotonic() + 30.0
        while counters.frames + counters.series_started + counters.series_ended + counters.rejected < N_MESSAGES:
            assert time.monotonic() < deadline, f"only {counters.snapshot()} of {N_MESSAGES} messages seen"
            source.next_frame(0.05)  # raises if anything escapes the decoder
    finally:
        push.close(linger=0)
        source.close()
    elapsed_s = time.monotonic() - t0
    counters = source.counters
    assert counters.frames + counters.series_started + counters.series_ended + counters.rejected == N_MESSAGES
    assert sum(counters.rejected_by_reason.values()) == counters.rejected >= 0.9 * N_MESSAGES
    assert "internal_error" not in counters.rejected_by_reason
    assert set(counters.rejected_by_reason) <= documented_reasons(), "a reason missing from docs/protocol.md"
    for reason in ("unsupported_dtype", "implausible_index", "size_mismatch", "part_count", "bad_field",
                   "header_not_msgpack", "header_ext_type", "header_too_large", "absurd_shape"):
        assert counters.rejected_by_reason.get(reason, 0) > 0, reason
    assert elapsed_s < 20.0


def test_generator_is_deterministic_and_targets_numpys_dtype_parser():
    first = [parts[0] for _, parts in zip(range(200), hostile_messages(N_MESSAGES), strict=False)]
    again = [parts[0] for _, parts in zip(range(200), hostile_messages(N_MESSAGES), strict=False)]
    assert first == again
    raised = set()
    rng = random.Random(1)
    for _ in range(2000):
        try:
            np.dtype(_random_dtype_string(rng))
        except SyntaxError:
            raised.add("SyntaxError")
        except Exception:  # only SyntaxError matters here
            pass
    assert "SyntaxError" in raised  # the strings do reach the parser path that escaped before


# ---------------------------------------------------------------- non-finite pixels through the service


class ResultList:
    """A sink keeping every result (the service's own Sink protocol)."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []

    def open(self, run: RunInfo) -> None:
        pass

    def consume(self, result: FrameResult) -> None:
        self.results.append(result)

    def on_status(self, status: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _service_config(**pipeline: Any) -> ServiceConfig:
    return ServiceConfig.from_mapping({
        "recorder": {"enabled": False}, "publisher": {"enabled": False}, "control": {"enabled": False},
        "calibration": {"pixel_size_nm": 2.0, "fps": 50.0},
        "pipeline": {"backpressure": "every-frame", "status_interval_s": 0.2, **pipeline},
    })


PROMPTS = [Prompt(1, 0, ((30.0, 40.0),), (1,)), Prompt(2, 0, ((70.0, 60.0),), (1,))]


def test_nan_frames_are_repaired_or_rejected_no_bogus_detection_no_swap():
    frames, truth = disk_video(n_frames=60, velocity=(0.5, 0.25))
    frames = frames.astype(np.float32)
    rng = np.random.default_rng(3)
    light = [5, 6, 7, 20, 21, 40]  # a dead column at x = 0 and a few hot pixels: repaired
    heavy = [10, 11, 30, 31, 32]  # all NaN: rejected. Unscreened, these made the two particles swap.
    for t in light:
        frames[t, :, 0] = np.nan
        frames[t, rng.integers(0, 96, 10), rng.integers(0, 128, 10)] = np.inf
    for t in heavy:
        frames[t] = np.nan
    keep = ResultList()
    built = build_service(_service_config(), source=ArraySource(frames), edits=PROMPTS, extra_sinks=[keep])
    status = built.service.run()

    assert status.rejected_by_reason == {"non_finite": len(heavy)} and status.messages_rejected == len(heavy)
    assert status.frames_repaired == len(light)
    # each frame counted once: received (and processed) or rejected
    assert status.frames_received == 60 - len(heavy) and status.frames_processed == 60 - len(heavy)
    assert [r.index for r in keep.results] == [t for t in range(60) if t not in heavy]
    for result in keep.results:
        assert np.isfinite(result.frame.pixels).all()
        for m in result.measurements:
            assert m.present, (result.index, m.particle)
            error = math.hypot(m.x - truth[result.index, m.particle - 1, 0], m.y - truth[result.index, m.particle - 1, 1])
            assert error < 1.0, (result.index, m.particle, m.x, m.y)  # no swap, no detection at x = 0


def test_integer_frames_skip_the_finiteness_scan():
    big = np.full((1024, 1024), 7, np.uint16)
    assert count_non_finite(big) == 0
    # Best of 5 batches (robust to a busy machine): any pass over 1024^2 pixels takes >= ~50 us.
    best_s = min(timeit.repeat(lambda: count_non_finite(big), number=200, repeat=5)) / 200
    assert best_s < 10e-6


# ---------------------------------------------------------------- a spill that cannot be written


@contextlib.contextmanager
def unwritable_beyond(directory: Path, limit_bytes: int) -> Iterator[str]:
    """Make files in ``directory`` unwritable beyond ``limit_bytes``, for real.

    A tmpfs of that size mounted on it (ENOSPC) where we may mount (root); otherwise RLIMIT_FSIZE for this
    process (EFBIG: CPython ignores SIGXFSZ), restored on exit. Yields which one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limit_bytes}", "tmpfs", str(directory)],
                                 capture_output=True, check=False).returncode == 0
    except OSError:  # no mount command
        mounted = False
    if mounted:
        try:
            yield "tmpfs"
        finally:
            subprocess.run(["umount", "-l", str(directory)], check=False)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield "rlimit"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _frame(i: int) -> Frame:
    return Frame("s", i, float(i), np.full((64, 128), i, np.uint16), Calibration(fps=80.0))  # 16 KiB


def test_queue_drops_counted_when_the_spill_disk_is_full_and_recovers(tmp_path, caplog):
    queue = FrameQueue("every-frame", capacity=2, spill_dir=tmp_path / "spill")
    with unwritable_beyond(tmp_path / "spill", 64 * 1024), caplog.at_level(logging.WARNING):
        for i in range(20):  # 2 in memory, ~4 fit on the disk, the rest cannot be spilled
            queue.put(_frame(i))  # never raises
        failed = queue.dropped_by_reason.get("spill_failed", 0)
        assert failed >= 10 and queue.dropped == failed and queue.spilled == 20 - 2 - failed
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "spill_failed" in errors[0].getMessage()  # once, not once per frame
        kept = [queue.get(0.01) for _ in range(20 - failed)]
        assert queue.get(0.01) is None
        # Drained: the spill file starts over, so spilling works again.
        for i in range(20, 24):
            queue.put(_frame(i))
        assert queue.dropped_by_reason["spill_failed"] == failed
    indices = [f.index for f in kept] + [queue.get(0.01).index for _ in range(4)]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert all(int(f.pixels[5, 5]) == f.index for f in kept)  # what came back from disk is intact
    queue.close()


def test_every_frame_service_with_a_full_spill_disk_streams_on_with_counted_drops(tmp_path):
    frames, _truth = disk_video(n_frames=300, shape=(64, 128))  # 16 KiB frames, delivered as fast as possible
    spill = tmp_path / "spill"
    keep = ResultList()
    with unwritable_beyond(spill, 64 * 1024):
        built = build_service(_service_config(queue_frames=2, spill_dir=str(spill)), source=ArraySource(frames),
                              edits=PROMPTS, extra_sinks=[keep])
        status = built.service.run()
    assert built.service.state is ServiceState.STOPPED and status.error is None
    failed = status.dropped_by_reason.get("spill_failed", 0)
    assert failed > 0, "the worker kept up: the fault was not exercised"
    assert status.frames_processed + failed == 300 and status.frames_dropped == failed
    indices = [r.index for r in keep.results]
    assert indices == sorted(set(indices))  # in order, none twice
    for result in keep.results:  # every frame that went through the spill came back intact
        np.testing.assert_array_equal(result.frame.pixels, frames[result.index])


def test_missing_spill_directory_is_a_counted_drop_not_a_crash(tmp_path):
    queue = FrameQueue("every-frame", capacity=1, spill_dir=tmp_path / "gone")
    for i in range(5):
        queue.put(_frame(i))
    assert queue.dropped_by_reason == {"spill_failed": 4} and len(queue) == 1
    (tmp_path / "gone").mkdir()  # the directory comes back: spilling resumes
    queue.put(_frame(5))
    assert queue.spilled == 1 and [queue.get(0.01).index for _ in range(2)] == [0, 5]
    queue.close()


# ---------------------------------------------------------------- the scenario, end to end


def test_service_streams_through_hostile_frames_on_the_wire():
    """A live service fed by a camera over ZeroMQ: the hostile messages of issue 18 cost themselves only."""
    frames, truth = disk_video(n_frames=60, velocity=(0.5, 0.25))
    camera = FramePublisher("tcp://127.0.0.1:0")
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": camera.endpoint},
        "recorder": {"enabled": False}, "publisher": {"enabled": False}, "control": {"enabled": False},
        "calibration": {"pixel_size_nm": 2.0, "fps": 50.0}, "pipeline": {"backpressure": "every-frame"},
    })
    keep = ResultList()
    built = build_service(config, edits=PROMPTS, extra_sinks=[keep], stop_at_series_end=True)
    built.service.start()
    try:
        time.sleep(0.5)  # slow joiner
        camera.send_series_start(SeriesInfo("cam", frames.shape[1:], frames.dtype.str, Calibration(fps=50.0)))
        for i, pixels in enumerate(frames):
            camera.send_frame(pixels.copy(), "cam", i, time.time())
            if i == 20:  # numpy's parser raised SyntaxError on these: the service died (exit 2)
                for dtype in ("(,,", "(2,3"):
                    header = {"protocol": "sam4em-frame", "version": 1, "type": "frame", "series_id": "cam",
                              "index": 21, "timestamp_s": time.time(), "shape": [96, 128], "dtype": dtype}
                    camera.send_raw([msgpack.packb(header), pixels.tobytes()])
            if i == 30:  # these made every later frame non_monotonic
                camera.send_frame(pixels.copy(), "cam", 31 + 10**6, time.time())
                camera.send_raw([msgpack.packb({"protocol": "sam4em-frame", "version": 1, "type": "frame",
                                                "series_id": "cam", "index": 2**63, "timestamp_s": 1.0,
                                                "shape": [96, 128], "dtype": "<u2"}), pixels.tobytes()])
            time.sleep(0.005)
        camera.send_series_end("cam", len(frames))
        assert built.service.wait(20), "the service did not stop at the series end"
    finally:
        built.service.stop()
        camera.close()
    status = built.service.status()
    assert built.service.error is None and status.frames_processed == 60
    assert status.rejected_by_reason == {"unsupported_dtype": 2, "implausible_index": 2}
    assert [r.index for r in keep.results] == list(range(60))
    final = keep.results[-1].measurements
    assert all(math.hypot(m.x - truth[59, m.particle - 1, 0], m.y - truth[59, m.particle - 1, 1]) < 1.0 for m in final)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_non_finite_sets_background_and_leaves_the_input_alone(dtype):
    pixels = np.full((64, 64), 100.0, dtype)
    pixels[10:20, 10:20] = 60.0  # a dark particle: not the median
    pixels[0, :] = np.nan
    pixels[1, :3] = (np.inf, -np.inf, np.nan)
    pixels.flags.writeable = False  # as a frame received over the network is
    assert count_non_finite(pixels) == 64 + 3
    repaired = fill_non_finite(pixels)
    assert repaired.dtype == dtype and np.isfinite(repaired).all()
    assert (repaired[0] == 100.0).all() and (repaired[1, :3] == 100.0).all()
    np.testing.assert_array_equal(repaired[2:], pixels[2:])
    assert np.isnan(pixels[0, 0])  # the input is untouched
    assert (fill_non_finite(np.full((4, 4), np.nan, dtype)) == 0).all()  # nothing finite: zeros


def test_finish_returns_only_once_the_run_folder_is_closed(tmp_path: Path) -> None:
    import json

    frames, _ = disk_video(n_frames=400)
    config = ServiceConfig.from_mapping({
        "recorder": {"enabled": True, "out_dir": str(tmp_path)}, "publisher": {"enabled": False},
        "control": {"enabled": False}, "pipeline": {"backpressure": "every-frame"},
    })
    built = build_service(config, source=ArraySource(frames, Calibration(2.0, 50.0), delay_s=0.005), edits=PROMPTS)
    built.service.start()
    time.sleep(0.5)
    built.service.finish(log_every_s=0.01)  # a limit far below the teardown's time: it must wait anyway
    assert built.service.wait(0)  # the service thread has ended: sinks closed
    assert built.run_dir is not None
    manifest = json.loads((built.run_dir / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["frames_recorded"] > 0
    built.close()
