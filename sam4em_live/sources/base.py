"""The frame-source seam: anything that yields detector frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sam4em_live.frames import Frame, SeriesInfo


class EndOfStream(Exception):
    """Raised by `FrameSource.next_frame` when a finite source has no more frames."""


@dataclass(slots=True)
class SourceCounters:
    """Monotonic counters a source keeps; read by the service for status."""

    frames: int = 0
    gaps: int = 0  # frame indices skipped upstream (sum of gap sizes)
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    series_started: int = 0
    series_ended: int = 0

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

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

    counters: SourceCounters

    @property
    def series(self) -> SeriesInfo | None: ...

    def open(self) -> None: ...

    def next_frame(self, timeout_s: float) -> Frame | None: ...

    def close(self) -> None: ...
