"""A finite source over any iterable of 2-D frames (a generator, a list, a reader yielding arrays).

For the Python API (``sam4em_live.track(frames_generator, ...)``): frames are pulled one at a time,
so a long recording produced lazily never sits in memory whole. The first frame is read when the
source is built, because the series (shape, dtype) must be known before the run starts; every
later frame must have that shape and dtype (a different one ends the run with a `ValueError`
naming the frame). Timestamps are the wall clock at emission, not acquisition times, as for
`sam4em_live.sources.array_source.ArraySource` (this class over an array's first axis). ``delay_s``
paces the frames (a paced series is ``live``: the service may drop frames when it falls behind).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.sources.base import EndOfStream, SourceCounters

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


class IterableSource:
    """Yield the frames of ``frames`` (each a (rows, columns) array) as one series, then `EndOfStream`."""

    def __init__(self, frames: Iterable[np.ndarray], calibration: Calibration | None = None,
                 series_id: str = "frames", n_frames: int | None = None, delay_s: float = 0.0,
                 source_name: str = "iterable") -> None:
        self._frames: Iterator[np.ndarray] = iter(frames)
        try:
            first = np.asarray(next(self._frames))
        except StopIteration:
            raise ValueError("no frames: the iterable is empty") from None
        if first.ndim != 2:
            raise ValueError(f"each frame must be a 2-D array (rows, columns), got shape {first.shape}")
        self._first: np.ndarray | None = first
        self.calibration = calibration or Calibration()
        self.counters = SourceCounters()
        self.delay_s = delay_s
        metadata: dict[str, object] = {"source": source_name}
        if n_frames is not None:
            metadata["n_frames"] = int(n_frames)
        self._series = SeriesInfo(series_id, (int(first.shape[0]), int(first.shape[1])), first.dtype.str,
                                  self.calibration, metadata, acquisition_timestamps=False, live=delay_s > 0)
        self._next = 0

    @property
    def series(self) -> SeriesInfo:
        return self._series

    def open(self) -> None:
        pass

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self.delay_s:
            time.sleep(min(self.delay_s, timeout_s))
        if self._first is not None:
            pixels, self._first = self._first, None
        else:
            try:
                pixels = np.asarray(next(self._frames))
            except StopIteration:
                raise EndOfStream from None
            if pixels.shape != self._series.shape or pixels.dtype.str != self._series.dtype:
                raise ValueError(f"frame {self._next}: shape {pixels.shape} {pixels.dtype} differs from the first "
                                 f"frame's {self._series.shape} {np.dtype(self._series.dtype)}")
        frame = Frame(self._series.series_id, self._next, time.time(), pixels, self.calibration)
        self._next += 1
        self.counters.frames += 1
        return frame

    def close(self) -> None:
        pass
