"""What the pipeline produces: the run's identity and, per frame, everything known about it; handed to every sink."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sam4em_live.frames import Frame, SeriesInfo
from sam4em_live.particles import ParticleMask, ParticleMeasurement


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Something the service noticed (particle lost, near edge, frame gap, slow...).

    ``kind`` is a short snake_case name (see docs/hooks.md); ``detail`` is JSON-able.
    """

    kind: str
    frame: int
    particle: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything known about one processed frame.

    ``masks`` and ``measurements`` have one entry per tracked particle in the
    same order (absent particles included, with ``present=False``).
    ``stats`` maps particle id to its rolling statistics (JSON-able mapping,
    filled by the statistics stage when due, else empty).
    ``timings_ms`` holds per-stage durations; ``processed_s`` is the wall
    clock time (``time.time()``) when the result was complete.
    """

    frame: Frame
    masks: tuple[ParticleMask, ...]
    measurements: tuple[ParticleMeasurement, ...]
    stats: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    events: tuple[ServiceEvent, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    processed_s: float = 0.0

    @property
    def index(self) -> int:
        return self.frame.index


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Identity of a run, given to sinks when it opens."""

    run_id: str
    series: SeriesInfo
    backend: Mapping[str, Any]  # Segmenter.describe()
    config: Mapping[str, Any]  # the validated service config, JSON-able
    versions: Mapping[str, str] = field(default_factory=dict)
