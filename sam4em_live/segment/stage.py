"""The segment stage seam: frames and their edits in, one outcome per frame out, in submission order.

The pipeline worker never calls a `Segmenter` itself: it talks to a `SegmentStage`,
which decides where the backend runs. `InProcessSegmentStage` (here) runs it on
the worker thread, one frame at a time; `SegmenterProcess`
(`sam4em_live.segment.process_host`) runs it in a child process fed through shared
memory, with up to ``depth`` frames in flight. Both apply the `PromptError`
contract with `track_with_retries`, so an edit the backend refuses comes back as a
`RejectedEdit` in the outcome and the rest of the frame's edits still apply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sam4em_live.segment.base import (
    BacklogAware,
    DefersUpkeep,
    RejectedEdit,
    SeedsAside,
    Segmenter,
    track_with_retries,
)
from sam4em_live.segment.blas_threads import limit_blas_threads, restore_blas_threads

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.frames import Frame
    from sam4em_live.particles import ParticleEdit, ParticleMask
    from sam4em_live.segment.base import SeededEdits


class SegmentationFailed(RuntimeError):
    """The backend could not segment frame ``frame_index`` (that frame is skipped; the stream goes on)."""

    def __init__(self, frame_index: int, reason: str) -> None:
        super().__init__(f"frame {frame_index}: {reason}")
        self.frame_index = frame_index


class SegmentStageError(RuntimeError):
    """The stage itself can no longer segment (e.g. its process died): the run cannot go on."""


@dataclass(frozen=True, slots=True)
class SegmentOutcome:
    """One segmented frame: a mask per tracked particle, the edits the backend refused, its time.

    ``masks`` has one entry per tracked particle (absent ones included);
    ``rejected`` lists the edits dropped under the `PromptError` contract with the
    backend's reason; ``segment_ms`` is the backend's own time on the frame
    (milliseconds, wherever it ran).
    """

    frame: Frame
    masks: tuple[ParticleMask, ...]
    rejected: tuple[RejectedEdit, ...]
    segment_ms: float


@runtime_checkable
class SegmentStage(Protocol):
    """Where and how the backend runs; used by the pipeline worker thread only (never concurrently).

    - ``submit(frame, edits, seeded=None)`` starts a frame; ``edits`` are validated and
      anchored to it. Call only while ``fits(frame)``. Raises `SegmentStageError` if the
      stage is gone; never raises for a frame the backend fails on (``collect``
      reports that). ``seeded``: the edits' prompts were seeded beside the loop by
      ``seeds_aside`` (live mode; only when that is not None).
    - ``seeds_aside``: the backend, when it can seed prompts off the frame loop
      (`SeedsAside`: called from a helper thread) and runs where that thread can reach
      it; None otherwise (prompts are then seeded on the frame they land on).
    - ``collect(timeout_s)`` returns the oldest submitted frame's `SegmentOutcome`,
      or None if it is not ready within ``timeout_s`` (None: wait as long as it
      takes). Raises `SegmentationFailed` if the backend failed on that frame
      (it is then done with), `SegmentStageError` if the stage is gone,
      ``RuntimeError`` if nothing is in flight.
    - ``depth``: frames that may be in flight at once; ``in_flight``: submitted,
      not yet collected. ``fits(frame)``: whether ``submit`` can take ``frame``
      now without a collect first.
    - ``note_backlog(frames_waiting)``: live mode only, before a frame's ``submit``:
      how many frames wait behind it; passed on to a `BacklogAware` backend.
    - ``describe()`` and ``particles()``: the backend's, as in `Segmenter`
      (``particles`` as of the last collected frame).
    - ``close()`` releases the backend (and its process); called once at teardown.
    """

    @property
    def depth(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def seeds_aside(self) -> SeedsAside | None: ...

    def fits(self, frame: Frame) -> bool: ...

    def submit(self, frame: Frame, edits: Sequence[ParticleEdit], seeded: SeededEdits | None = None) -> None: ...

    def collect(self, timeout_s: float | None = None) -> SegmentOutcome | None: ...

    def note_backlog(self, frames_waiting: int) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def particles(self) -> list[int]: ...

    def close(self) -> None: ...


class InProcessSegmentStage:
    """The backend on the caller's thread: ``submit`` segments the frame, ``collect`` hands it back (depth 1).

    Nothing overlaps, so results are exactly those of calling the backend frame by frame.
    While the stage is open, BLAS runs on the calling thread only (`blas_threads`: its own threads
    doubled the backend's cost in the service on a small machine).
    """

    depth = 1

    def __init__(self, segmenter: Segmenter) -> None:
        self._segmenter = segmenter
        # Checked once: a runtime Protocol check per frame costs more than the call it guards.
        self._backlog_aware: BacklogAware | None = segmenter if isinstance(segmenter, BacklogAware) else None
        self._seeds_aside: SeedsAside | None = segmenter if isinstance(segmenter, SeedsAside) else None
        self._defers_upkeep: DefersUpkeep | None = segmenter if isinstance(segmenter, DefersUpkeep) else None
        self._frame: Frame | None = None  # submitted, not yet collected
        self._outcome: SegmentOutcome | None = None
        self._failure: Exception | None = None
        self._blas_before: dict[str, int] | None = limit_blas_threads(1)

    @property
    def in_flight(self) -> int:
        return 0 if self._frame is None else 1

    @property
    def seeds_aside(self) -> SeedsAside | None:
        return self._seeds_aside

    def fits(self, frame: Frame) -> bool:
        return self._frame is None

    def note_backlog(self, frames_waiting: int) -> None:
        if self._backlog_aware is not None:
            self._backlog_aware.note_backlog(frames_waiting)

    def submit(self, frame: Frame, edits: Sequence[ParticleEdit], seeded: SeededEdits | None = None) -> None:
        if self._frame is not None:
            raise RuntimeError("in-process segment stage: a frame is in flight; collect first")
        self._frame = frame
        start = time.perf_counter()
        try:
            masks, rejected = track_with_retries(self._segmenter, frame, edits, seeded)
        except Exception as exc:
            self._failure = exc
            return
        self._outcome = SegmentOutcome(frame, tuple(masks), tuple(rejected), (time.perf_counter() - start) * 1e3)

    def collect(self, timeout_s: float | None = None) -> SegmentOutcome | None:
        frame, outcome, failure = self._frame, self._outcome, self._failure
        if frame is None:
            raise RuntimeError("in-process segment stage: nothing in flight")
        self._frame = self._outcome = self._failure = None
        if failure is not None:
            raise SegmentationFailed(frame.index, f"{type(failure).__name__}: {failure}") from failure
        return outcome

    def upkeep(self) -> None:
        """The backend's work left from the frames collected so far (`DefersUpkeep`), after their sinks.

        Nothing while a frame is in flight. Raises what the backend's ``upkeep`` raises.
        """
        if self._defers_upkeep is not None and self._frame is None:
            self._defers_upkeep.upkeep()

    def describe(self) -> dict[str, Any]:
        return self._segmenter.describe()

    def particles(self) -> list[int]:
        return self._segmenter.particles()

    def close(self) -> None:
        self._segmenter.close()
        if self._blas_before is not None:
            restore_blas_threads(self._blas_before)
            self._blas_before = None
