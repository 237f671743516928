"""The bounded hand-off between the ingest thread and the pipeline worker.

Two explicit backpressure policies:

- ``latest`` (live view): at most ``capacity`` frames wait; when full, the
  oldest waiting frame is dropped and counted. The worker always works on
  recent frames, so latency stays bounded.
- ``every-frame`` (never drop): up to ``capacity`` frames wait in memory;
  beyond that, frames are appended to a spill file on disk (in arrival
  order) and read back when the worker catches up. Memory stays bounded;
  only disk grows, and only while the worker is behind.

`put` never blocks, so ingest never stalls on a slow worker.
"""

from __future__ import annotations

import collections
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np

from sam4em_live.frames import Calibration, Frame

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class _Spilled:
    """A frame parked on disk: where its pixels are and what it was."""

    offset: int
    series_id: str
    index: int
    timestamp_s: float
    shape: tuple[int, int]
    dtype: str
    calibration: Calibration


class FrameQueue:
    """Frames from the ingest thread to the worker under the ``latest`` or ``every-frame`` policy (module doc)."""

    def __init__(self, policy: str = "latest", capacity: int = 8, spill_dir: Path | None = None) -> None:
        if policy not in ("latest", "every-frame"):
            raise ValueError(f"unknown backpressure policy {policy!r}")
        self.policy = policy
        self.capacity = capacity
        self._spill_dir = spill_dir
        self._items: collections.deque[Frame | _Spilled] = collections.deque()
        self._in_memory = 0
        self._cond = threading.Condition()
        self._spill_file: IO[bytes] | None = None
        self._spill_write_offset = 0
        self._spilled_pending = 0
        self.dropped = 0
        self.spilled = 0

    def put(self, frame: Frame) -> None:
        """Enqueue without blocking, applying the backpressure policy."""
        with self._cond:
            if self._in_memory >= self.capacity:
                if self.policy == "latest":
                    self._items.popleft()
                    self._in_memory -= 1
                    self.dropped += 1
                else:
                    self._items.append(self._spill(frame))
                    self.spilled += 1
                    self._spilled_pending += 1
                    self._cond.notify()
                    return
            self._items.append(frame)
            self._in_memory += 1
            self._cond.notify()

    def get(self, timeout_s: float) -> Frame | None:
        """The oldest waiting frame, or None after ``timeout_s``."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout_s):
                return None
            item = self._items.popleft()
            if isinstance(item, _Spilled):
                frame = self._unspill(item)
                self._spilled_pending -= 1
                if self._spilled_pending == 0:
                    self._reset_spill()
                return frame
            self._in_memory -= 1
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._items.clear()
            self._in_memory = 0
            self._spilled_pending = 0
            if self._spill_file is not None:
                self._spill_file.close()
                self._spill_file = None

    def _spill(self, frame: Frame) -> _Spilled:
        if self._spill_file is None:
            self._spill_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the queue
                prefix="sam4em-spill-", suffix=".raw", dir=self._spill_dir
            )
            self._spill_write_offset = 0
        data = np.ascontiguousarray(frame.pixels)
        self._spill_file.seek(self._spill_write_offset)
        self._spill_file.write(data.data.cast("B"))
        entry = _Spilled(self._spill_write_offset, frame.series_id, frame.index, frame.timestamp_s,
                         frame.shape, data.dtype.str, frame.calibration)
        self._spill_write_offset += data.nbytes
        return entry

    def _unspill(self, item: _Spilled) -> Frame:
        assert self._spill_file is not None
        self._spill_file.flush()
        count = item.shape[0] * item.shape[1]
        pixels = np.fromfile(self._spill_file.name, dtype=item.dtype, count=count, offset=item.offset)
        return Frame(item.series_id, item.index, item.timestamp_s, pixels.reshape(item.shape), item.calibration)

    def _reset_spill(self) -> None:
        # Nothing left on disk: start the spill file over so it never grows without bound.
        if self._spill_file is not None:
            self._spill_file.truncate(0)
            self._spill_write_offset = 0
