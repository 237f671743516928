"""The detector's own thread: it takes the latest frame offered, never the worker's time (issue 21).

The worker offers a `DetectionJob` (a frame and the tracked particles' places) through a `LatestJob`
slot of one: an offer never blocks and replaces a job not taken yet (counted as superseded), so a
detector slower than the camera sees the newest frame each time instead of a growing backlog. What a run
decides comes back as a `DetectionOutcome` through a bounded queue the worker drains without waiting; when
the worker does not drain it (an every-frame run in lockstep, or a stalled worker) the detector thread
waits for room, never the worker.

Live, the thread also keeps its hands off the frame loop's share of the machine: it rests after each run
(``cpu_share``, by its own CPU time; `BEHIND_CPU_SHARE` after a run during which the worker fell behind its
camera) and its stages wait while the worker holds a frame (`StagePauses`, on the service's `WorkerIdle`).

Frames are handed over by reference, not copied: a `Frame`'s pixels are never written after it is made
(the pipeline's rule: a buffer ZeroMQ may still be sending is never mutated).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from sam4em_live.discover.policy import CandidateTrack
    from sam4em_live.frames import Frame
    from sam4em_live.results import ServiceEvent
    from sam4em_live.service.worker_idle import WorkerIdle

log = logging.getLogger(__name__)

#: Every wait is at most this long, so `close` is honoured within ~100 ms.
POLL_S = 0.05
#: Outcomes waiting for the worker at most; beyond it the detector thread waits for room.
OUTCOME_QUEUE = 8
#: The detector thread's CPU share (of one core) after a run during which the worker had frames waiting: on a
#: machine whose frame loop cannot keep up, every core-second the detector takes is frames lost (the detector
#: does not hold the interpreter in its numpy and SciPy calls: what it takes from the worker is cores, measured in
#: docs/discovery.md). A newcomer then waits longer for its id; the frames do not.
BEHIND_CPU_SHARE = 0.08
#: Live, the detector thread runs this much nicer than the service (Linux; per thread; 0: the same priority).
#: Off: at 10 the loop kept more frames on the loaded VM (docs/benchmarks.md, "What discovery costs"), but
#: the detector then starved there, and a newcomer at 80 fps no longer got its id within 5 frames
#: (tests/test_discovery_thread.py: 3 of 3 runs failed at nice 10, 2 of 3 at 5, none at 0).
LIVE_NICE = 0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DetectionJob:
    """One frame for the detector and where the particles tracked now are: (x, y, radius) in pixels."""

    frame: Frame
    keep_out: tuple[tuple[float, float, float], ...]
    offered_s: float  # perf_counter when offered: the wait until the thread takes it is part of the lag


@dataclass(frozen=True, slots=True)
class DetectionOutcome:
    """What one detector run decided, for the worker to apply.

    ``ready``: tracks that have just passed the policy (auto mode: to be added or proposed by the worker);
    ``events``: decisions already made (``proposed``, ``proposal_expired``); ``cost_ms``: the run's time on
    the detector thread; ``wait_ms``: from the offer to the start of the run.
    """

    frame_index: int
    ready: tuple[CandidateTrack, ...]
    events: tuple[ServiceEvent, ...]
    cost_ms: float
    wait_ms: float


@dataclass(slots=True)
class DiscoveryCost:
    """The detector's cost so far (ms on its own thread) and how far it keeps up with the frames."""

    runs: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    offered: int = 0  # frames offered to the thread
    lag_frames: int = 0  # sum over runs of (frame applied on - frame detected on)
    wait_ms: float = 0.0  # sum over runs of offer -> run start

    def add(self, outcome: DetectionOutcome, applied_on: int) -> None:
        self.runs += 1
        self.total_ms += outcome.cost_ms
        self.max_ms = max(self.max_ms, outcome.cost_ms)
        self.lag_frames += applied_on - outcome.frame_index
        self.wait_ms += outcome.wait_ms

    def as_dict(self, superseded: int, errors: int, paced_s: float = 0.0, gated_s: float = 0.0,
                backoffs: int = 0) -> dict[str, float | int]:
        """The ``discovery_cost`` event's detail.

        ``paced_s``: the thread's rests so far (`DetectorThread`); ``gated_s``: its waits for an idle worker;
        ``backoffs``: runs after which it rested longer because the worker fell behind.
        """
        n = max(self.runs, 1)
        return {"runs": self.runs, "ms_per_run": round(self.total_ms / n, 3), "ms_max": round(self.max_ms, 3),
                "frames_offered": self.offered, "frames_superseded": superseded, "errors": errors,
                "lag_frames_mean": round(self.lag_frames / n, 2), "wait_ms_mean": round(self.wait_ms / n, 3),
                "rest_s": round(paced_s, 3), "gate_wait_s": round(gated_s, 3), "backoffs": backoffs}


#: Longest a detector run waits, over all its stages, for the worker to be idle (then its stages run regardless):
#: on a machine whose worker is never idle, discovery slows by at most this a run instead of stopping.
GATE_MAX_WAIT_S = 0.02


class StagePauses:
    """The detector's pause points: between its stages it waits while the worker holds a frame (live runs).

    The detector's stages are short numpy calls with Python between them: run while the worker segments a
    frame, each hand-over of the interpreter (the GIL) between the two costs the worker up to a switch
    interval. So at each stage boundary (`pause`) the detector waits for the service's `WorkerIdle`, at most
    `GATE_MAX_WAIT_S` in all a run (`new_run`; a worker that never catches up still gets its discovery,
    slower). The seeding helper waits on the same signal at a finer grain (`service.seeding`).
    """

    def __init__(self, worker: WorkerIdle) -> None:
        self._worker = worker
        self._budget_s = GATE_MAX_WAIT_S  # what the current run may still wait (detector thread only)
        self.waited_s = 0.0  # the detector thread's waits so far

    def behind(self) -> int:
        """The frames the worker has taken so far with frames waiting behind them (`WorkerIdle.behind`)."""
        return self._worker.behind

    def new_run(self) -> None:
        """A detector run starts: it may wait `GATE_MAX_WAIT_S` in all (detector thread)."""
        self._budget_s = GATE_MAX_WAIT_S

    def pause(self) -> None:
        """Until the worker is idle, within the run's budget (detector thread, between stages)."""
        if self._budget_s <= 0 or self._worker.idle:
            return
        started = time.perf_counter()
        self._worker.wait(self._budget_s)
        waited = time.perf_counter() - started
        self._budget_s -= waited
        self.waited_s += waited


class LatestJob(Generic[T]):
    """A mailbox of one: `offer` replaces what was not taken yet and never blocks; `take` waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self.superseded = 0  # offers replaced before the thread took them

    def offer(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.superseded += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout_s: float) -> T | None:
        """The item offered last, or None if none comes within ``timeout_s``."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item


class DetectorThread:
    """Runs ``detect`` on each job taken from a `LatestJob` and queues its outcome (bounded).

    ``cpu_share`` (live runs): after each run the thread rests so that it uses at most this share of one
    core (`_rest`); the frame loop keeps the rest of the machine, and discovery runs less often on a busy
    one instead of slowing tracking. None (lockstep runs): no rest. ``behind`` (live runs): a counter of the
    frames the worker took with frames waiting behind (`WorkerIdle.behind`); a run during which it grew rests for
    `BEHIND_CPU_SHARE` instead (counted in ``backoffs``).

    Every job taken gives exactly one outcome, in order, so a caller in lockstep may wait for it. An
    exception in ``detect`` is logged and counted (``errors``) and gives an empty outcome: a detector
    bug must not end tracking. Started by `start`, ended by `close` (joins; idempotent).
    """

    def __init__(self, detect: Callable[[DetectionJob], DetectionOutcome], name: str = "sam4em-discovery",
                 cpu_share: float | None = None, behind: Callable[[], int] | None = None) -> None:
        self._detect = detect
        self.cpu_share = cpu_share
        self._behind = behind
        self.paced_s = 0.0  # time spent resting to keep within ``cpu_share``
        self.backoffs = 0  # runs after which the thread rested for `BEHIND_CPU_SHARE` (the worker fell behind)
        self.jobs: LatestJob[DetectionJob] = LatestJob()
        self.outcomes: queue.Queue[DetectionOutcome] = queue.Queue(OUTCOME_QUEUE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def offer(self, job: DetectionJob) -> None:
        """Hand the thread a job (never blocks; an older job not taken yet is dropped)."""
        self.jobs.offer(job)

    def _loop(self) -> None:
        if self.cpu_share is not None and LIVE_NICE > 0:
            _lower_priority(LIVE_NICE)
        while not self._stop.is_set():
            job = self.jobs.take(POLL_S)
            if job is None:
                continue
            cpu_started = time.thread_time()
            behind_before = self._behind() if self._behind is not None else 0
            try:
                outcome = self._detect(job)
            except Exception:
                self.errors += 1
                log.exception("discovery failed on frame %d; going on", job.frame.index)
                outcome = DetectionOutcome(job.frame.index, (), (), 0.0, 0.0)
            while not self._stop.is_set():
                try:
                    self.outcomes.put(outcome, timeout=POLL_S)
                    break
                except queue.Full:
                    continue
            fell_behind = self._behind is not None and self._behind() != behind_before
            self._rest(time.thread_time() - cpu_started, fell_behind)

    def _rest(self, cpu_s: float, fell_behind: bool = False) -> None:
        """After a run that used ``cpu_s`` of CPU, rest so that the thread keeps within its share of a core.

        The share is ``cpu_share``, or `BEHIND_CPU_SHARE` if the worker fell behind meanwhile. Offers made meanwhile replace each other (`LatestJob`): the next run takes the newest frame. CPU time,
        not wall time: on a busy machine a run's wall time is mostly waiting for a core, which is not what
        the frame loop loses.
        """
        share = self.cpu_share
        if share is None:
            return
        if fell_behind and share > BEHIND_CPU_SHARE:
            share = BEHIND_CPU_SHARE
            self.backoffs += 1
        if share >= 1.0:
            return
        rest_s = cpu_s * (1.0 / share - 1.0)
        self.paced_s += rest_s
        self._stop.wait(rest_s)


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (Linux: a thread's own; elsewhere, or refused, unchanged)."""
    if not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:
        log.warning("discovery: could not lower the detector thread's priority (%s)", exc)
