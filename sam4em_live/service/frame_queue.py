"""The bounded hand-off between the ingest thread and the pipeline worker.

Two explicit backpressure policies:

- ``latest`` (live view): at most ``capacity`` frames wait; when full, the
  oldest waiting frame is dropped and counted. The worker always works on
  recent frames, so latency stays bounded.
- ``every-frame`` (never drop): up to ``capacity`` frames wait in memory;
  beyond that, frames are appended to a spill file on disk (in arrival
  order) and read back when the worker catches up. Memory stays bounded;
  only disk grows, and only while the worker is behind. When the spill
  cannot be written (disk full, directory gone or read-only, file size
  limit) the frame is dropped and counted as ``spill_failed``; the stream
  goes on, and spilling resumes by itself once a write succeeds again.

`put` never blocks and never raises, so ingest never stalls on a slow worker
and a full disk never ends a run. Drops are counted by reason
(``dropped_by_reason``: ``queue_full`` under ``latest``, ``spill_failed``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.frames import Calibration, Frame

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Spilled:
    """A frame parked on disk: where its pixels are and what it was."""

    offset: int
    nbytes: int
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
        self._spill_fd: int | None = None  # an unlinked temporary file: nothing is left behind, even on a crash
        self._spill_write_offset = 0
        self._spilled_pending = 0
        self._spill_failing = False  # log a failure once per episode, not once per frame
        self.dropped = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.spilled = 0

    def put(self, frame: Frame) -> None:
        """Enqueue without blocking, applying the backpressure policy; never raises."""
        with self._cond:
            if self._in_memory >= self.capacity:
                if self.policy == "latest":
                    self._items.popleft()
                    self._in_memory -= 1
                    self._drop("queue_full")
                else:
                    entry = self._spill(frame)
                    if entry is None:
                        self._drop("spill_failed")
                        return
                    self._items.append(entry)
                    self.spilled += 1
                    self._spilled_pending += 1
                    self._cond.notify()
                    return
            self._items.append(frame)
            self._in_memory += 1
            self._cond.notify()

    def get(self, timeout_s: float) -> Frame | None:
        """The oldest waiting frame, or None after ``timeout_s`` (or if the one waiting cannot be read back)."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout_s):
                return None
            item = self._items.popleft()
            if isinstance(item, _Spilled):
                frame = self._unspill(item)
                self._spilled_pending -= 1
                if self._spilled_pending == 0:
                    self._reset_spill()
                if frame is None:
                    self._drop("spill_failed")
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
            if self._spill_fd is not None:
                os.close(self._spill_fd)
                self._spill_fd = None

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1

    def _spill(self, frame: Frame) -> _Spilled | None:
        """Write ``frame`` to the spill file; None (logged once per episode) if the write fails."""
        data = np.ascontiguousarray(frame.pixels)
        view = data.data.cast("B")  # C-contiguous: a flat byte view, no copy
        try:
            if self._spill_fd is None:
                fd, name = tempfile.mkstemp(prefix="sam4em-spill-", suffix=".raw", dir=self._spill_dir)
                os.unlink(name)
                self._spill_fd = fd
                self._spill_write_offset = 0
            written = 0
            while written < view.nbytes:  # pwrite may write less than asked (a signal, a quota)
                written += os.pwrite(self._spill_fd, view[written:], self._spill_write_offset + written)
        except OSError as exc:
            # Disk full, directory gone or read-only, RLIMIT_FSIZE: drop (counted), keep streaming. The
            # bytes written so far are overwritten by the next spill, which starts at the same offset.
            if not self._spill_failing:
                log.error("cannot spill frame %d to %s (%s): dropping frames (counted as spill_failed) "
                          "until the spill can be written again", frame.index,
                          self._spill_dir or tempfile.gettempdir(), exc)
            self._spill_failing = True
            return None
        if self._spill_failing:
            log.warning("spill writable again: every-frame queue spilling to disk again")
            self._spill_failing = False
        entry = _Spilled(self._spill_write_offset, view.nbytes, frame.series_id, frame.index, frame.timestamp_s,
                         frame.shape, data.dtype.str, frame.calibration)
        self._spill_write_offset += view.nbytes
        return entry

    def _unspill(self, item: _Spilled) -> Frame | None:
        assert self._spill_fd is not None
        try:
            data = os.pread(self._spill_fd, item.nbytes, item.offset)
        except OSError as exc:
            log.error("cannot read spilled frame %d back (%s): dropped (counted as spill_failed)", item.index, exc)
            return None
        if len(data) != item.nbytes:
            log.error("spilled frame %d is truncated on disk: dropped (counted as spill_failed)", item.index)
            return None
        pixels = np.frombuffer(data, dtype=item.dtype).reshape(item.shape)
        return Frame(item.series_id, item.index, item.timestamp_s, pixels, item.calibration)

    def _reset_spill(self) -> None:
        # Nothing left on disk: start the spill file over so it never grows without bound.
        if self._spill_fd is not None:
            with contextlib.suppress(OSError):  # the next spill overwrites from offset 0 anyway
                os.ftruncate(self._spill_fd, 0)
            self._spill_write_offset = 0
