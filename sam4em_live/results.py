"""What the pipeline produces: the run's identity and, per frame, everything known about it; handed to every sink."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.frames import Frame, SeriesInfo, TimeBase
    from sam4em_live.particles import EditRecord, ParticleMask, ParticleMeasurement


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Something the service noticed (particle lost, near edge, frame gap, slow...).

    ``kind`` is a short snake_case name (see docs/hooks.md); ``detail`` is JSON-able.
    """

    kind: str
    frame: int
    particle: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticleStatistics:
    """One particle's rolling statistics over the window, as the statistics stage computed them.

    The tMSD lists hold only lags with at least one pair, all of the same
    length: ``lag_frames`` (true frame differences), ``lag_s`` (None without
    fps), ``msd_px2``, ``msd_nm2`` (None without pixel size), ``n`` (pairs per
    lag). The fit ``MSD = 4 D tau^alpha + offset`` over ``fit_lags`` lags gives
    ``D_px2_per_frame`` and ``D_err`` (px^2/frame^alpha), ``alpha``,
    ``alpha_err``, ``offset_px2``; ``D_nm2_per_s`` and ``D_nm2_per_s_err``
    (nm^2/s^alpha) need both fps and pixel size. The alpha = 1 fit gives
    ``D_linear_px2_per_frame`` and ``D_linear_err``. ``frames_seen`` counts
    positions ever received (it tells the record's age), ``frames_in_window``
    those in the ``window_frames``-frame window. Undeterminable values are None
    (never NaN). Field names are the keys of the published ``stats`` entry
    (docs/results.md, `sam4em_live.sinks.results_schema.statistics_entry`).
    """

    lag_frames: tuple[int, ...]
    lag_s: tuple[float, ...] | None
    msd_px2: tuple[float, ...]
    msd_nm2: tuple[float, ...] | None
    n: tuple[int, ...]
    fit_lags: int
    window_frames: int
    frames_seen: int
    frames_in_window: int
    D_px2_per_frame: float | None = None
    D_err: float | None = None
    alpha: float | None = None
    alpha_err: float | None = None
    offset_px2: float | None = None
    D_linear_px2_per_frame: float | None = None
    D_linear_err: float | None = None
    D_nm2_per_s: float | None = None
    D_nm2_per_s_err: float | None = None


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything known about one processed frame.

    ``masks`` and ``measurements`` have one entry per tracked particle in the
    same order (absent particles included, with ``present=False``).
    ``stats`` maps particle id to its `ParticleStatistics` (filled by the
    statistics stage on publishing frames, else empty).
    ``timings_ms`` holds per-stage durations; ``processed_s`` is the wall
    clock time (``time.time()``) when the result was complete. ``edits`` says
    what became of each edit decided at this frame (applied before it was
    segmented, or refused), in the order they were decided.
    """

    frame: Frame
    masks: tuple[ParticleMask, ...]
    measurements: tuple[ParticleMeasurement, ...]
    stats: Mapping[int, ParticleStatistics] = field(default_factory=dict)
    events: tuple[ServiceEvent, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    processed_s: float = 0.0
    edits: tuple[EditRecord, ...] = ()

    @property
    def index(self) -> int:
        return self.frame.index


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Identity of a run, given to sinks when it opens.

    ``time_base`` and ``live`` are the series' (`SeriesInfo`): where the run's acquisition times come from
    (recorded in ``run.json``), and whether live-only signals (camera rate, latency, ``processing_slow``)
    mean anything in it.
    """

    run_id: str
    series: SeriesInfo
    backend: Mapping[str, Any]  # Segmenter.describe()
    config: Mapping[str, Any]  # the validated service config, JSON-able
    versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def time_base(self) -> TimeBase:
        return self.series.time_base

    @property
    def live(self) -> bool:
        return self.series.live
