"""The recorder's parts alone: the writer thread (typed dispatch, backpressure policy) and the per-file writers.

Real threads, real queues and real files in tmp_path; the handlers below are small real implementations
of `MessageHandler` that keep what they were given (a stuck one stands for a disk that stopped).
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from sam4em_live.frames import Calibration
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
from sam4em_live.results import ServiceEvent
from sam4em_live.sinks.recorder.files import JsonlWriter, TrajectoriesCsvWriter
from sam4em_live.sinks.recorder.messages import (
    AnnotationMessage,
    RecorderCounts,
    ResultMessage,
    StatusMessage,
)
from sam4em_live.sinks.recorder.writer_thread import ANNOTATION_WAIT_S, WriterThread

if TYPE_CHECKING:
    from pathlib import Path

SHAPE = (32, 40)


def result_message(index: int, timestamp_s: float = 0.0, present: bool = True) -> ResultMessage:
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    mask = ParticleMask.from_full(1, (cols - 10 - index) ** 2 + (rows - 12) ** 2 <= 16, 0.9) if present \
        else ParticleMask.absent(1, 0.1)
    return ResultMessage(index, timestamp_s, timestamp_s, (measure_mask(mask, index),), (mask,),
                         (ServiceEvent("particle_lost", index, 1, {}),))


class KeepingHandler:
    """Keeps every call in order; ``gate`` (when given) holds write_result, as a disk that stopped would."""

    def __init__(self, gate: threading.Event | None = None, fail_on: int | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self.gate = gate
        self.fail_on = fail_on
        self.in_write = threading.Event()

    def start(self) -> None:
        self.calls.append(("start", None))

    def write_result(self, message: ResultMessage) -> None:
        self.in_write.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if message.index == self.fail_on:
            raise OSError("No space left on device")
        self.calls.append(("result", message.index))

    def write_status(self, message: StatusMessage) -> None:
        self.calls.append(("status", dict(message.status)))

    def write_annotation(self, message: AnnotationMessage) -> None:
        self.calls.append(("annotation", message.text))

    def end_batch(self) -> None:
        self.calls.append(("end_batch", None))

    def flush(self) -> None:
        self.calls.append(("flush", None))

    def finish(self) -> None:
        self.calls.append(("finish", None))

    def kinds(self, *names: str) -> list[tuple[str, object]]:
        return [call for call in self.calls if call[0] in names]


def test_messages_reach_the_handler_method_of_their_type_in_order() -> None:
    handler, counts = KeepingHandler(), RecorderCounts()
    writer = WriterThread(16, counts)
    writer.submit(result_message(0))  # before start: waits in the queue
    writer.start(handler)
    writer.submit(StatusMessage({"state": "streaming"}))
    writer.submit(AnnotationMessage("2026-01-01T00:00:00.000+00:00", 1.0, 0, "beam blanked"))
    writer.submit(result_message(1))
    writer.close()
    assert handler.kinds("start", "result", "status", "annotation", "finish") == [
        ("start", None), ("result", 0), ("status", {"state": "streaming"}), ("annotation", "beam blanked"),
        ("result", 1), ("finish", None)]
    assert ("end_batch", None) in handler.calls  # the queue ran dry after frame 0
    assert not writer.alive and counts == RecorderCounts()  # nothing skipped, lost or failed


def test_an_idle_queue_flushes_what_was_written() -> None:
    handler = KeepingHandler()
    writer = WriterThread(4, RecorderCounts())
    writer.start(handler)
    writer.submit(result_message(0))
    deadline = time.monotonic() + 2.0
    while ("flush", None) not in handler.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.close()
    assert handler.calls.index(("flush", None)) > handler.calls.index(("result", 0))
    assert handler.calls.count(("flush", None)) == 1  # once for the write; an idle queue with nothing new: no flush


def test_a_full_queue_skips_status_at_once_and_counts_it() -> None:
    gate = threading.Event()
    handler, counts = KeepingHandler(gate), RecorderCounts()
    writer = WriterThread(2, counts)
    writer.start(handler)
    writer.submit(result_message(0))
    assert handler.in_write.wait(5)  # the thread is stuck writing frame 0
    writer.submit(result_message(1))
    writer.submit(result_message(2))  # the queue is full now
    t0 = time.perf_counter()
    for _ in range(100):
        writer.submit(StatusMessage({"state": "streaming"}))
    assert time.perf_counter() - t0 < 0.5  # never waits (one wait slice alone is 0.1 s; 100 of them 10 s)
    assert counts.status_skipped == 100 and counts.recorder_backpressure == 0
    gate.set()
    writer.close()
    assert handler.kinds("result") == [("result", 0), ("result", 1), ("result", 2)]
    assert handler.kinds("status") == []


def test_a_full_queue_makes_a_result_wait_for_room_counted_never_lost() -> None:
    gate = threading.Event()
    handler, counts = KeepingHandler(gate), RecorderCounts()
    writer = WriterThread(1, counts)
    writer.start(handler)
    writer.submit(result_message(0))
    assert handler.in_write.wait(5)
    writer.submit(result_message(1))  # fills the queue
    done = threading.Event()
    pipeline = threading.Thread(target=lambda: (writer.submit(result_message(2)), done.set()))
    pipeline.start()
    assert not done.wait(0.3)  # waiting for the disk, as documented
    assert counts.recorder_backpressure == 1
    gate.set()
    assert done.wait(5)
    pipeline.join()
    writer.close()
    assert handler.kinds("result") == [("result", 0), ("result", 1), ("result", 2)]
    assert counts.results_lost == 0


def test_without_a_writer_thread_a_full_queue_loses_results_counted_without_waiting() -> None:
    counts = RecorderCounts()
    writer = WriterThread(1, counts)  # never started: no thread will ever make room
    writer.submit(result_message(0))
    t0 = time.perf_counter()
    writer.submit(result_message(1))
    assert time.perf_counter() - t0 < 0.5  # no wait slice (0.1 s each) while no thread can make room
    assert (counts.recorder_backpressure, counts.results_lost) == (1, 1)


def test_a_full_queue_holds_an_annotation_one_second_then_counts_it_lost() -> None:
    gate = threading.Event()
    handler, counts = KeepingHandler(gate), RecorderCounts()
    writer = WriterThread(1, counts)
    writer.start(handler)
    writer.submit(result_message(0))
    assert handler.in_write.wait(5)
    writer.submit(result_message(1))
    t0 = time.perf_counter()
    writer.submit(AnnotationMessage("t", 0.0, None, "lost note"))
    waited = time.perf_counter() - t0
    gate.set()
    writer.close()
    assert ANNOTATION_WAIT_S * 0.9 <= waited < ANNOTATION_WAIT_S + 1.0
    assert counts.results_lost == 1 and handler.kinds("annotation") == []


def test_a_failing_write_is_counted_and_the_thread_goes_on() -> None:
    handler, counts = KeepingHandler(fail_on=1), RecorderCounts()
    writer = WriterThread(8, counts)
    writer.start(handler)
    for i in range(4):
        writer.submit(result_message(i))
    writer.close()
    assert counts.write_errors == 1
    assert handler.kinds("result", "finish") == [("result", 0), ("result", 2), ("result", 3), ("finish", None)]


def test_counts_keep_their_documented_order() -> None:
    assert list(RecorderCounts().as_dict()) == [
        "frames_recorded", "particle_rows", "mask_pages", "events", "annotations", "edits", "status_snapshots",
        "recorder_backpressure", "results_lost", "write_errors", "masks_not_drawn", "status_skipped",
        "results_after_stop"]


# ---------------------------------------------------------------- per-file writers


@pytest.mark.parametrize("calibration, times", [
    (Calibration(pixel_size_nm=2.0, fps=20.0), [0.0, 0.05, 0.15]),  # t_s = frame / fps
    (Calibration(), [0.0, 0.5, 1.75]),  # t_s from timestamps, relative to the first frame
])
def test_trajectories_csv_writer_rows_reach_the_file_whole_at_flush(tmp_path: Path, calibration, times) -> None:
    path = tmp_path / "trajectories.csv"
    writer = TrajectoriesCsvWriter(path, calibration)
    assert writer.write(result_message(0, 100.0)) == 1
    assert writer.write(result_message(1, 100.5)) == 1
    assert writer.write(result_message(2, 100.0, present=False)) == 0  # absent: no row
    assert path.read_text() == ",".join(writer.columns) + "\n"  # the header at once; rows only at a flush
    assert (writer.rows, writer.frames) == (0, 0)
    writer.flush()
    assert len(path.read_text().splitlines()) == 3  # the header and two whole rows
    assert (writer.rows, writer.frames) == (2, 3)  # what the file holds: 2 rows from 3 frames
    writer.write(result_message(3, 101.75))
    writer.close()
    table = pd.read_csv(path)
    assert list(table.columns) == writer.columns and ("x_nm" in table.columns) == (calibration.pixel_size_nm is not None)
    assert table.frame.tolist() == [0, 1, 3]
    assert table.t_s.tolist() == pytest.approx(times)
    with pytest.raises(FileExistsError):  # a recording never overwrites a file
        TrajectoriesCsvWriter(path, calibration)


def test_jsonl_writer_writes_strict_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = JsonlWriter(path)
    writer.write({"kind": "particle_lost", "detail": {"x": math.nan, "y": np.float32(1.5)}, "frame": np.int64(3)})
    writer.write({"text": "ünïcode"})
    writer.flush()
    writer.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"kind": "particle_lost", "detail": {"x": None, "y": 1.5}, "frame": 3}, {"text": "ünïcode"}]
    assert writer.lines == 2
