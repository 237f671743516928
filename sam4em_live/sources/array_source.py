"""A finite source over frames already in memory (a numpy stack).

For notebooks and tests: run the full pipeline on an array without files or
sockets. Frames are stamped with the wall clock at emission, which is not an
acquisition time: the run's time axis is ``calibration.fps``, else frames
(`sam4em_live.frames.TimeBase`). ``delay_s`` optionally paces them; unpaced,
the series is not ``live``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.sources.base import EndOfStream, SourceCounters

if TYPE_CHECKING:
    import numpy as np


class ArraySource:
    """Yield ``frames[0], frames[1], ...`` (a (T, rows, columns) array), then `EndOfStream`."""

    def __init__(self, frames: np.ndarray, calibration: Calibration | None = None, delay_s: float = 0.0,
                 series_id: str = "array") -> None:
        if frames.ndim != 3:
            raise ValueError(f"frames must be (T, rows, columns), got shape {frames.shape}")
        self.frames = frames
        self.delay_s = delay_s
        self.calibration = calibration or Calibration()
        self.counters = SourceCounters()
        self._series = SeriesInfo(series_id, (int(frames.shape[1]), int(frames.shape[2])), frames.dtype.str,
                                  self.calibration, {"source": "array", "n_frames": int(frames.shape[0])},
                                  acquisition_timestamps=False, live=delay_s > 0)
        self._next = 0

    @property
    def series(self) -> SeriesInfo:
        return self._series

    def open(self) -> None:
        pass

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._next >= len(self.frames):
            raise EndOfStream
        if self.delay_s:
            time.sleep(min(self.delay_s, timeout_s))
        frame = Frame(self._series.series_id, self._next, time.time(), self.frames[self._next], self.calibration)
        self._next += 1
        self.counters.frames += 1
        return frame

    def close(self) -> None:
        pass
