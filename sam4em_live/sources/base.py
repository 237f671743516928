"""The frame-source seam: anything that yields detector frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sam4em_live.frames import Frame, SeriesInfo


class EndOfStream(Exception):
    """Raised by `FrameSource.next_frame` when a finite source has no more frames."""


#: A source logs the first rejects of each reason, then one in every `REJECT_LOG_EVERY` (a hostile sender must
#: not flood the log; the counters hold every one).
REJECT_LOG_FIRST = 5
REJECT_LOG_EVERY = 1000


def reject_worth_logging(count: int) -> bool:
    """Whether the ``count``-th reject of a reason is logged (`REJECT_LOG_FIRST`, `REJECT_LOG_EVERY`)."""
    return count <= REJECT_LOG_FIRST or count % REJECT_LOG_EVERY == 0


@dataclass(slots=True)
class SourceCounters:
    """Monotonic counters a source keeps; read by the service for status."""

    frames: int = 0
    gaps: int = 0  # frame indices skipped upstream (sum of gap sizes)
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    series_started: int = 0
    series_ended: int = 0

    def reject(self, reason: str) -> int:
        """Count one rejected message for ``reason``; returns how many that reason has now."""
        self.rejected += 1
        n = self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        return n

    def snapshot(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "gaps": self.gaps,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "series_started": self.series_started,
            "series_ended": self.series_ended,
        }


@runtime_checkable
class FrameSource(Protocol):
    """A source of frames, read by the service's ingest thread only.

    - ``open()`` connects / opens files; raises on unrecoverable problems
      (missing file, bad endpoint). Called once before reading.
    - ``next_frame(timeout_s)`` returns the next `Frame`, or ``None`` if none
      arrived within ``timeout_s`` (so the caller can poll its stop event; it
      must never block longer). Raises `EndOfStream` when a finite source is
      exhausted. Malformed input is counted in ``counters`` and skipped, never
      raised.
    - ``series`` is the metadata of the current series (``None`` until known).
    - ``close()`` releases resources; safe to call twice.
    """

    @property
    def counters(self) -> SourceCounters: ...

    @property
    def series(self) -> SeriesInfo | None: ...

    def open(self) -> None: ...

    def next_frame(self, timeout_s: float) -> Frame | None: ...

    def close(self) -> None: ...


@runtime_checkable
class MovableStage(Protocol):
    """A source that can move its field of view (the simulator); optional beside `FrameSource`.

    ``move_stage(dx_nm, dy_nm)`` moves the stage relative to where it is, in nanometres along
    the image axes (x = columns, y = rows): the image content then shifts by -d / pixel_size_nm
    pixels. It is called from hook threads while the ingest thread reads frames, so it must be
    thread-safe; it takes effect from a frame not yet emitted. It may raise on a move the stage
    refuses; the caller (the hooks' command gate) reports it as a failed command.
    """

    def move_stage(self, dx_nm: float, dy_nm: float) -> None: ...
