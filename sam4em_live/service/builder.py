"""Composition root: build sources, sinks and the service from a `ServiceConfig`.

Everything optional (recorder, publisher, control channel, hooks) is created
here and nowhere else, so the CLI commands, the demo and the tests assemble
the same service the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sam4em_live.config import ConfigError, ServiceConfig
from sam4em_live.frames import Calibration
from sam4em_live.io.prompts_file import load_prompts
from sam4em_live.segment.process_host import SegmenterProcess, SegmenterProcessError
from sam4em_live.segment.registry import create_segmenter
from sam4em_live.segment.stage import InProcessSegmentStage, SegmentStage
from sam4em_live.service.service import Service
from sam4em_live.sinks.registry import build_sink
from sam4em_live.sources.calibrated import calibrated
from sam4em_live.sources.registry import SourceContext
from sam4em_live.sources.registry import build_source as build_registered_source

if TYPE_CHECKING:  # imported where they are built, so a service without them never loads them
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from sam4em_live.control.server import ControlServer
    from sam4em_live.hooks.events import EventDetector
    from sam4em_live.hooks.runner import HookRunner
    from sam4em_live.particles import ParticleEdit
    from sam4em_live.sinks.base import Sink
    from sam4em_live.sinks.publisher import ResultsPublisher
    from sam4em_live.sinks.recorder import Recorder
    from sam4em_live.sources.base import FrameSource
    from sam4em_live.stats.rolling import RollingTrackStats

log = logging.getLogger(__name__)


def _override(config: ServiceConfig) -> Calibration:
    return Calibration(pixel_size_nm=config.calibration.pixel_size_nm, fps=config.calibration.fps)


def build_source(config: ServiceConfig, stop_at_series_end: bool = False) -> FrameSource:
    """The ``[source]`` of ``config`` from the source registry (`sam4em_live.sources.registry`)."""
    return build_registered_source(config.source, SourceContext(stop_at_series_end, _override(config)))


def with_calibration(config: ServiceConfig, source: FrameSource) -> FrameSource:
    """Apply the config's calibration overrides (if any) to every frame of ``source``."""
    override = _override(config)
    if override == Calibration():
        return source
    return calibrated(source, override)


@dataclass
class BuiltService:
    """The assembled service and its optional parts (None when disabled)."""

    service: Service
    publisher: ResultsPublisher | None = None
    recorder: Recorder | None = None
    control: ControlServer | None = None
    hooks: HookRunner | None = None
    segmenter: SegmentStage | None = None
    # The `[[sinks]]` of the config (sink registry), in their order.
    sinks: tuple[Sink, ...] = ()

    @property
    def run_dir(self) -> Path | None:
        return self.recorder.run_dir if self.recorder is not None else None

    def close(self) -> None:
        if self.control is not None:
            self.control.stop()


def build_service(
    config: ServiceConfig,
    source: FrameSource | None = None,
    edits: Sequence[ParticleEdit] = (),
    run_id: str | None = None,
    max_frames: int | None = None,
    extra_sinks: Sequence[Sink] = (),
    stop_at_series_end: bool = False,
) -> BuiltService:
    """Assemble a service from ``config``; ``source`` overrides ``config.source``.

    If any part fails to build (bad prompts file, missing checkpoint, port in
    use), the parts already built are closed before the error propagates.
    """
    if config.prompts is not None:
        edits = [*load_prompts(config.prompts), *edits]
    source = with_calibration(config, source or build_source(config, stop_at_series_end))
    built = BuiltService(service=None)  # type: ignore[arg-type]
    try:
        return _assemble(config, source, built, edits, run_id, max_frames, extra_sinks)
    except BaseException:
        if built.publisher is not None:
            built.publisher.close()
        if built.control is not None:
            built.control.stop()
        if built.segmenter is not None:
            built.segmenter.close()
        source.close()
        raise


def _build_segmenter(config: ServiceConfig) -> SegmentStage:
    """The configured backend as a segment stage: in this process, or in a child if ``segmenter.own_process``."""
    seg = config.segmenter
    if not seg.own_process:
        return InProcessSegmentStage(create_segmenter(seg.backend, seg.options))
    try:
        return SegmenterProcess(seg.backend, seg.options, depth=seg.process_depth)
    except SegmenterProcessError as exc:
        # Bad options, unknown backends and missing checkpoints come back as the backend's own errors;
        # this is the child failing in some other way (crash while importing or building).
        raise ConfigError(str(exc)) from exc


def _assemble(config: ServiceConfig, source: FrameSource, built: BuiltService, edits: Sequence[ParticleEdit],
              run_id: str | None, max_frames: int | None, extra_sinks: Sequence[Sink]) -> BuiltService:
    segmenter = _build_segmenter(config)
    built.segmenter = segmenter  # closed by build_service if a later part fails
    sinks: list[Sink] = []
    if config.publisher.enabled:
        from sam4em_live.sinks.publisher import ResultsPublisher

        built.publisher = ResultsPublisher(config.publisher)
        sinks.append(built.publisher)
    if config.recorder.enabled:
        from sam4em_live.sinks.recorder import Recorder, RecorderError

        try:  # an unwritable out_dir refuses the start: never stream unrecorded when recording was asked for
            built.recorder = Recorder(config.recorder.out_dir, write_masks=config.recorder.write_masks,
                                      queue_frames=config.recorder.queue_frames,
                                      mask_writer=config.recorder.mask_writer)
        except RecorderError as exc:
            raise ConfigError(f"recorder.out_dir: {exc} (or set recorder.enabled = false)") from exc
        sinks.append(built.recorder)
    built.hooks = _build_hooks(config)
    if built.hooks is not None:
        sinks.append(built.hooks)
    # Registered sinks are opened and closed by the service like the others; until then they hold nothing.
    built.sinks = tuple(build_sink(spec, i) for i, spec in enumerate(config.sinks))
    sinks.extend(built.sinks)
    sinks.extend(extra_sinks)
    service = Service(
        config, source, segmenter, sinks, edits=edits, stats_factory=_stats_factory(config),
        events=_build_events(config), run_id=run_id, max_frames=max_frames,
    )
    built.service = service
    if built.hooks is not None:
        built.hooks.bind(service=service, source=source)
    if config.control.enabled:
        built.control = _build_control(config, service)
    return built


def _stats_factory(config: ServiceConfig) -> Callable[[Calibration], RollingTrackStats]:
    from sam4em_live.stats.rolling import RollingTrackStats

    def make(calibration: Calibration) -> RollingTrackStats:
        return RollingTrackStats(config.stats.window_frames, config.stats.max_lag_frames,
                                 calibration.fps, calibration.pixel_size_nm)

    return make


def _build_events(config: ServiceConfig) -> EventDetector:
    from sam4em_live.hooks.events import EventDetector

    return EventDetector.from_config(config.hooks)


def _build_hooks(config: ServiceConfig) -> HookRunner | None:
    if not config.hooks.hooks:
        return None
    from sam4em_live.hooks.runner import HookRunner

    return HookRunner.from_config(config.hooks)


def _build_control(config: ServiceConfig, service: Service) -> ControlServer:
    from sam4em_live.control.server import ControlServer

    server = ControlServer.from_config(config.control, service)
    server.start()
    return server
