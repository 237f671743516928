"""A camera stand-in for service tests: frames in a loop at a camera's pace, indices increasing, until closed."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.sources.base import EndOfStream, SourceCounters

if TYPE_CHECKING:
    import numpy as np


class PacedSource:
    """A real `FrameSource`: cycles through ``frames`` at ``fps`` (indices keep increasing) until closed."""

    def __init__(self, frames: np.ndarray, fps: float, calibration: Calibration, series_id: str = "paced") -> None:
        self.frames = frames
        self.period_s = 1.0 / fps
        self.calibration = calibration
        self.counters = SourceCounters()
        self._series = SeriesInfo(series_id, (frames.shape[1], frames.shape[2]), frames.dtype.str, calibration)
        self._next = 0
        self._start = 0.0
        self._closed = threading.Event()

    @property
    def series(self) -> SeriesInfo:
        return self._series

    def open(self) -> None:
        self._start = time.monotonic()

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._closed.is_set():
            raise EndOfStream
        wait_s = self._start + self._next * self.period_s - time.monotonic()
        if wait_s > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait_s > 0:
            time.sleep(wait_s)
        pixels = self.frames[self._next % len(self.frames)]
        frame = Frame(self._series.series_id, self._next, time.time(), pixels, self.calibration)
        self._next += 1
        self.counters.frames += 1
        return frame

    def close(self) -> None:
        self._closed.set()
