"""Backpressure policies: latest drops oldest; every-frame spills to disk and loses nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sam4em_live.frames import Calibration, Frame
from sam4em_live.service.frame_queue import FrameQueue


def _frame(i: int) -> Frame:
    return Frame("s", i, float(i), np.full((16, 16), i, np.uint16), Calibration(fps=80.0))


def test_latest_drops_oldest_and_counts():
    q = FrameQueue("latest", capacity=3)
    for i in range(10):
        q.put(_frame(i))
    assert q.dropped == 7 and q.dropped_by_reason == {"queue_full": 7} and len(q) == 3
    assert [q.get(0.01).index for _ in range(3)] == [7, 8, 9]
    assert q.get(0.01) is None


def test_every_frame_spills_in_order_and_keeps_pixels(tmp_path):
    q = FrameQueue("every-frame", capacity=4, spill_dir=tmp_path)
    for i in range(50):
        q.put(_frame(i))
    assert q.dropped == 0 and q.spilled == 46 and len(q) == 50
    out = []
    for i in range(25):  # interleave: producer keeps adding while the worker catches up
        out.append(q.get(0.01))
        q.put(_frame(50 + i))
    while (f := q.get(0.01)) is not None:
        out.append(f)
    assert [f.index for f in out] == list(range(75))
    assert all(int(f.pixels[3, 3]) == f.index and f.calibration.fps == 80.0 for f in out)
    q.close()


def test_get_times_out_and_wakes_on_put():
    q = FrameQueue("latest", capacity=2)
    assert q.get(0.02) is None
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(2.0)))
    t.start()
    q.put(_frame(1))
    t.join(1.0)
    assert got and got[0].index == 1


def test_unknown_policy_rejected():
    with pytest.raises(ValueError, match="backpressure"):
        FrameQueue("sometimes")


def test_spilled_frames_leave_no_file_behind(tmp_path):
    q = FrameQueue("every-frame", capacity=1, spill_dir=tmp_path)
    for i in range(5):
        q.put(_frame(i))
    assert q.spilled == 4 and list(tmp_path.iterdir()) == []  # the spill file is unlinked at once
    assert [q.get(0.01).index for _ in range(5)] == list(range(5))
    q.close()
