"""The frame-source registry: ``[source] kind = ...`` -> a `FrameSource`, open to plugins.

Built in: ``zmq`` (live frames over ZeroMQ, the default), ``replay`` (a recording as a timed stream),
``watched-folder`` (frame files as an acquisition program writes them), ``dectris`` (a DECTRIS detector's
SIMPLON stream v1/v2; docs/live_sources.md) and ``simulator`` (the LPTEM simulator,
`sam4em_live.sim.source`). Other distributions add kinds through the ``sam4em_live.sources`` entry-point
group::

    [project.entry-points."sam4em_live.sources"]
    watched-folder = "my_package.watched:WatchedFolderSource"

where ``WatchedFolderSource.Options`` is a frozen pydantic model (``extra="forbid"``) of the table's keys
beside ``kind``, and ``WatchedFolderSource(options, context)`` builds the source; ``context`` is the
`SourceContext` below. See `sam4em_live.plugins` for the rules every registry follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import PositiveFloat, PositiveInt

from sam4em_live.config import FrozenModel, SourceConfig, ZmqSourceConfig
from sam4em_live.frames import Calibration
from sam4em_live.plugins import FactoryPlugin, Registry, load_object
from sam4em_live.sources.base import FrameSource

ENTRY_POINT_GROUP = "sam4em_live.sources"


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What the service hands every source plugin besides its options.

    ``stop_at_series_end``: a live source ends the stream (`EndOfStream`) when its series ends.
    ``calibration_override``: user-given calibration (config, CLI); a source that paces itself by the
    recording's frame rate (replay) needs it before it opens. Every frame's calibration is overridden
    afterwards anyway, so other sources may ignore it.
    """

    stop_at_series_end: bool = False
    calibration_override: Calibration = field(default_factory=Calibration)


class SimulatorOptions(FrozenModel):
    """Options of the ``simulator`` source (`sam4em_live.sim.source.SimulatedSource`)."""

    preset: str = "demo"
    seed: int = 0
    frames: PositiveInt | None = None  # None = endless
    fps: PositiveFloat | None = None  # None = the preset's rate
    as_fast_as_possible: bool = False


def _zmq(options: ZmqSourceConfig, context: SourceContext) -> FrameSource:
    from sam4em_live.sources.zmq_source import ZmqFrameSource

    return ZmqFrameSource.from_config(options, stop_at_series_end=context.stop_at_series_end)


def _simulator(options: SimulatorOptions, context: SourceContext) -> FrameSource:
    # `sim` sits above `sources` (it renders frames with the simulator and uses this package's seam), so
    # the simulator is named by its import path and imported only when chosen, like an entry point.
    simulated_source = load_object("sam4em_live.sim.source:SimulatedSource")
    assert callable(simulated_source)
    source: FrameSource = simulated_source(options.preset, seed=options.seed, n_frames=options.frames,
                                           fps=options.fps, as_fast_as_possible=options.as_fast_as_possible)
    return source


SOURCES: Registry[FrameSource] = Registry(
    "source", ENTRY_POINT_GROUP, FrameSource,
    builtins={
        "zmq": FactoryPlugin(ZmqSourceConfig, _zmq),
        "replay": "sam4em_live.sources.replay:REPLAY_PLUGIN",
        "watched-folder": "sam4em_live.sources.watched_folder:WATCHED_FOLDER_PLUGIN",
        "dectris": "sam4em_live.sources.dectris.source:DECTRIS_PLUGIN",
        "simulator": FactoryPlugin(SimulatorOptions, _simulator),
    },
)


def build_source(config: SourceConfig, context: SourceContext | None = None) -> FrameSource:
    """The source the ``[source]`` table names, built and checked against `FrameSource`."""
    return SOURCES.build(config.kind, config.options, context or SourceContext(), where="source")
