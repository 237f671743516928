"""What travels from the pipeline (and the control channel) to the recorder's writer thread.

Every message is a small frozen record: results carry measurements, mask crops and events, never the
frame's pixels, so a full queue of thousands of them stays a few megabytes. The writer thread
dispatches on the message's type (`writer_thread.WriterThread`); what happens to each type when the
queue is full is the backpressure policy documented there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.frames import Calibration
    from sam4em_live.particles import EditRecord, ParticleMask, ParticleMeasurement
    from sam4em_live.results import ServiceEvent


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """What the writers need from one `FrameResult` (times in seconds, Unix epoch).

    Built by `Recorder.consume` on the pipeline thread; it copies references only. ``series_id``,
    ``shape`` (rows, columns), ``dtype`` and ``calibration`` are the frame's: they tell which series
    the result belongs to (`sinks.series_segments`).
    """

    index: int
    timestamp_s: float
    processed_s: float
    measurements: tuple[ParticleMeasurement, ...]
    masks: tuple[ParticleMask, ...]
    events: tuple[ServiceEvent, ...]
    edits: tuple[EditRecord, ...] = ()  # what became of the edits decided at this frame (edits.jsonl)
    series_id: str = ""
    shape: tuple[int, int] = (0, 0)
    dtype: str = ""
    calibration: Calibration | None = None  # None: the run's series calibration


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A service status snapshot (JSON-able; a copy, so the service may reuse its own mapping)."""

    status: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AnnotationMessage:
    """A note from the control channel; ``frame`` is the last processed frame when it was made (or None)."""

    wall_time_utc: str
    wall_time_s: float
    frame: int | None
    text: str

    def as_record(self) -> dict[str, Any]:
        """The ``annotations.jsonl`` line (key order as documented in docs/recording.md)."""
        return {"wall_time_utc": self.wall_time_utc, "wall_time_s": self.wall_time_s, "frame": self.frame,
                "text": self.text}


@dataclass(frozen=True, slots=True)
class CloseMessage:
    """The last message: the writer thread finishes the run directory and ends."""


RecorderMessage = ResultMessage | StatusMessage | AnnotationMessage | CloseMessage


@dataclass(slots=True)
class RecorderCounts:
    """The recorder's counters (``run.json`` ``counts`` and the service status), in their documented order.

    Mutable on purpose: the queue's counts are bumped on the calling thread (pipeline, control channel)
    and the files' counts on the writer thread, each field by the thread that owns the event it counts.
    """

    frames_recorded: int = 0
    particle_rows: int = 0
    mask_pages: int = 0
    events: int = 0
    annotations: int = 0
    edits: int = 0  # lines in edits.jsonl
    status_snapshots: int = 0
    recorder_backpressure: int = 0  # results that found the queue full and waited for room
    results_lost: int = 0  # results (or notes) not recorded: writer gone, recorder closed, queue full for notes
    write_errors: int = 0
    masks_not_drawn: int = 0  # particles with ids above 65535 (uint16 labels)
    status_skipped: int = 0  # status snapshots that found the queue full
    results_after_stop: int = 0  # results (and notes) that came after the recording stopped on a write error

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
