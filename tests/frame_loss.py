"""Which frames a live run lost, and whether each loss was the service's or the test machine's.

A live test that says "no frame lost" claims that the service keeps up with a camera the machine can keep
up with. On the shared 2-core test machine a frame can also be lost for reasons that are not the service's
(measured: docs/benchmarks.md, "Frames lost in the live tests"):

- **the machine**: other processes held both cores and the worker thread (or the ingest thread that queues
  frames), runnable, waited for one. Under load 5-7 the worker waited for a core 30-80 % of the time a
  dropped frame had spent in the queue; on a quiet machine it waits ~0.5 ms a frame;
- **the hypervisor**: the virtual machine's cores were taken by its host (``steal`` in ``/proc/stat``) for
  at least one of the worker's frames' time in the window: the development VM's speed varied 2x between
  sessions, and a loss there showed the worker taking 3 frames in 80 ms with no wait for a core;
- **the camera**: the sender process (on the same two cores) was late, then sent what it owed at once; a
  burst of more frames than the queue holds loses frames however fast the worker is.

`LossLedger` is the run's real `FrameQueue` (``latest`` policy) that notes each frame it drops: from its
capture to its drop, how many frames the worker took and how long the worker thread (the one that takes
frames) and the ingest thread (the one that queues them) waited for a core, read from Linux's per-thread
scheduler statistics (``/proc/self/task/<tid>/schedstat``: time runnable but not running; waiting for the
interpreter lock is sleeping, not counted), and over how long the frames that pushed it out were sent
(their capture timestamps). A test asserts on `Loss.service_lost` only: a loss while both threads had the cores they asked
for (the worker's waits shorter than one of its frames' time, the ingest thread's than 2 camera periods) and
the frames were sent at the camera's pace. Where the statistics cannot be read every loss counts
against the service.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from sam4em_live.service.frame_queue import FrameQueue

if TYPE_CHECKING:
    from sam4em_live.frames import Frame

#: A loss is the machine's when the ingest thread waited for a core this many camera periods since the
#: dropped frame's capture (the frames it queued that late came at once).
INGEST_WAIT_PERIODS = 2.0
#: A loss is the camera's when the frames that pushed it out were sent at more than twice the camera's rate:
#: from the dropped frame's capture to the capture of the one that pushed it out, less than this fraction of
#: the time ``capacity`` frames take at that rate (capture: the frame's timestamp, set by the sender).
BURST_FRACTION = 0.5


def _schedstat_s(native_id: int | None, field: int) -> float | None:
    """Field ``field`` of thread ``native_id``'s scheduler statistics, in seconds (0: time on a core, 1: time
    runnable but not running; None: unknown)."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[field]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _waited_for_a_core_s(native_id: int | None) -> float | None:
    """Seconds thread ``native_id`` of this process has spent runnable but not running (None: unknown)."""
    return _schedstat_s(native_id, 1)


def _stolen_per_core_s() -> float | None:
    """Seconds the host has taken this VM's cores since boot, per core (``steal`` in ``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") / max(os.cpu_count() or 1, 1)
    except (OSError, IndexError, ValueError):
        return None


def _since(now: float | None, then: float | None) -> float | None:
    return None if now is None or then is None else now - then


@dataclass(frozen=True)
class Loss:
    """A frame dropped by the queue, and what the service's threads and the camera did from its capture on.

    Times in seconds. The window is the frame's whole time in the service, from its capture (the sender's
    timestamp) to its drop: the backlog that pushed it out built up over that time, and a late ingest thread
    queues what it owes at once (a frame may be dropped 1 ms after it was queued).
    """

    frame: int
    since_capture_s: float  # the window
    queued_s: float  # of which in the queue
    taken: int  # frames the worker took in the window
    worker_core_wait_s: float | None  # the worker runnable but not running in the window (None: not measured)
    ingest_core_wait_s: float | None  # the thread that queues frames, the same
    worker_ran_s: float | None  # the worker on a core in the window (its frames' cost, in CPU time)
    stolen_s: float | None  # the host's steal in the window, per core
    sent_span_s: float  # from its capture to the capture of the frame that pushed it out
    camera_period_s: float
    capacity: int

    @property
    def machine_lost(self) -> bool:
        """The machine held the worker off the cores (or the host took the VM's) for at least one of its
        frames' time in the window (it would have reached the frame), or the ingest thread for
        `INGEST_WAIT_PERIODS` camera periods."""
        worker, ingest, stolen = self.worker_core_wait_s, self.ingest_core_wait_s, self.stolen_s
        # one of its frames' time: the window less its waits, over the frames it took
        held = (worker or 0.0) + (stolen or 0.0)
        return ((held > 0 and held >= (self.since_capture_s - held) / max(self.taken, 1))
                or (ingest is not None and ingest >= INGEST_WAIT_PERIODS * self.camera_period_s))

    @property
    def camera_lost(self) -> bool:
        """The frames behind it were sent in a burst (the sender late, then catching up)."""
        return self.sent_span_s < BURST_FRACTION * self.capacity * self.camera_period_s

    @property
    def service_lost(self) -> bool:
        return not (self.machine_lost or self.camera_lost)

    def describe(self) -> str:
        def ms(wait: float | None) -> str:
            return "?" if wait is None else f"{wait * 1e3:.0f}"

        return (f"frame {self.frame} ({self.since_capture_s * 1e3:.0f} ms from capture to drop, "
                f"{self.queued_s * 1e3:.0f} of them queued; meanwhile the worker took {self.taken} frames and waited "
                f"{ms(self.worker_core_wait_s)} ms for a core (ran {ms(self.worker_ran_s)} ms), the ingest thread "
                f"{ms(self.ingest_core_wait_s)} ms, the host stole {ms(self.stolen_s)} ms a core; "
                f"the frames behind it sent over {self.sent_span_s * 1e3:.0f} ms)")


class _Sample(NamedTuple):
    at: float  # monotonic s
    worker_wait: float | None  # the worker's core waits so far, s
    ingest_wait: float | None
    worker_ran: float | None  # the worker's time on a core so far, s
    stolen: float | None  # the host's steal so far, per core, s
    taken: int  # frames taken so far


class LossLedger(FrameQueue):
    """The service's frame queue (``latest``), noting each frame it drops as a `Loss` (module doc).

    Installed in place of a built service's queue before the run starts: ``service.queue = LossLedger(...)``.
    """

    def __init__(self, camera_fps: float, capacity: int = 8) -> None:
        super().__init__("latest", capacity)
        self._period_s = 1.0 / camera_fps
        self._arrived: dict[int, tuple[float, float]] = {}  # frame -> (its arrival, monotonic s; its capture, s)
        self._worker: int | None = None  # the native id of the thread that takes frames
        self._taken = 0  # frames taken so far
        self._samples: collections.deque[_Sample] = collections.deque(maxlen=512)  # one at each frame queued
        self.losses: list[Loss] = []

    def put(self, frame: Frame) -> None:
        now, wall = time.monotonic(), time.time()
        sample = _Sample(now, _waited_for_a_core_s(self._worker), _waited_for_a_core_s(threading.get_native_id()),
                         _schedstat_s(self._worker, 0), _stolen_per_core_s(), self._taken)
        with self._cond:  # the queue's own (reentrant) lock: the frame dropped is the oldest one, now
            victim = self._items[0] if len(self._items) >= self.capacity else None
            super().put(frame)
            self._arrived[frame.index] = (now, frame.timestamp_s)
        if victim is not None:
            arrived, captured = self._arrived.pop(victim.index, (now, frame.timestamp_s))
            window = wall - captured
            before = [x for x in self._samples if x.at <= now - window]  # the last sample before its capture
            base = before[-1] if before else (self._samples[0] if self._samples else sample)
            self.losses.append(Loss(victim.index, window, now - arrived, sample.taken - base.taken,
                                    _since(sample.worker_wait, base.worker_wait),
                                    _since(sample.ingest_wait, base.ingest_wait),
                                    _since(sample.worker_ran, base.worker_ran), _since(sample.stolen, base.stolen),
                                    frame.timestamp_s - captured,
                                    self._period_s, self.capacity))
        self._samples.append(sample)

    def get(self, timeout_s: float) -> Frame | None:
        if self._worker is None:
            self._worker = threading.get_native_id()
        frame = super().get(timeout_s)
        if frame is not None:
            with self._cond:
                self._arrived.pop(frame.index, None)
                self._taken += 1
        return frame

    def lost(self, first: int, last: int) -> list[Loss]:
        """The losses of frames ``first``..``last`` (inclusive), in the order they were dropped."""
        return [loss for loss in self.losses if first <= loss.frame <= last]
