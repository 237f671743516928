"""The optional seams beside `Sink` and `FrameSource`: checked when a part is registered, used only if declared.

Real parts throughout: the threshold backend on frames in memory, a real publisher on port 0, a real
recorder in tmp_path, the simulator as the movable stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from sam4em_live.config import ConfigError, PublisherConfig, ServiceConfig
from sam4em_live.frames import Calibration
from sam4em_live.hooks.runner import HookRunner
from sam4em_live.particles import Prompt
from sam4em_live.results import FrameResult, RunInfo
from sam4em_live.service.builder import build_service
from sam4em_live.sim.source import SimulatedSource
from sam4em_live.sinks.base import AnnotationSink, CountingSink, Sink, require_sink
from sam4em_live.sinks.publisher import ResultsPublisher
from sam4em_live.sinks.recorder import Recorder
from sam4em_live.sources.array_source import ArraySource
from sam4em_live.sources.base import FrameSource, MovableStage
from sam4em_live.sources.calibrated import CalibratedSource, CalibratedStageSource, calibrated
from tests.conftest import disk_video

PROMPTS = [Prompt(1, 0, ((30.0, 40.0),), (1,))]
KEEP_CENTRED = {"target": "keep-centred", "options": {"edge_margin_px": 64, "max_step_nm": 40, "settle_frames": 3}}


def config(**over: dict[str, Any]) -> ServiceConfig:
    data: dict[str, dict[str, Any]] = {
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False}, "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"},
    }
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return ServiceConfig.from_mapping(data)


class PlainSink:
    """A `Sink` and nothing more."""

    def __init__(self) -> None:
        self.frames: list[int] = []

    def open(self, run: RunInfo) -> None:
        pass

    def consume(self, result: FrameResult) -> None:
        self.frames.append(result.index)

    def on_status(self, status: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class TallySink(PlainSink):
    """A counting and annotating sink."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[tuple[str, int | None]] = []

    @property
    def counters(self) -> Mapping[str, int]:
        return {"frames_seen": len(self.frames), "notes": len(self.notes)}

    def annotate(self, text: str, frame: int | None = None) -> None:
        self.notes.append((text, frame))


class NoConsume:
    def open(self, run: RunInfo) -> None:
        pass

    def on_status(self, status: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class CountersAsMethod(PlainSink):
    """The old form: counters as a method. Refused, so one form reaches the status snapshot."""

    def counters(self) -> dict[str, int]:
        return {"frames_seen": len(self.frames)}


@pytest.mark.parametrize("sink, message", [
    (NoConsume(), "NoConsume is not a Sink"),
    (object(), "object is not a Sink"),
    (CountersAsMethod(), "CountersAsMethod.counters must be a property giving a Mapping"),
])
def test_a_bad_sink_is_refused_at_registration(sink: object, message: str) -> None:
    frames, _ = disk_video(n_frames=3)
    source = ArraySource(frames)
    with pytest.raises(TypeError, match=message):
        build_service(config(), source=source, extra_sinks=[sink])  # type: ignore[list-item]
    assert source.counters.frames == 0  # refused while building, before any frame was read
    with pytest.raises(TypeError, match=message):
        require_sink(sink)


def test_counters_reach_the_status_and_annotations_reach_the_annotating_sinks() -> None:
    frames, _ = disk_video(n_frames=12)
    plain, tally = PlainSink(), TallySink()
    built = build_service(config(), source=ArraySource(frames), edits=PROMPTS, extra_sinks=[plain, tally])
    built.service.annotate("before the first frame")
    status = built.service.run()
    built.service.annotate("after the run")
    built.close()
    assert plain.frames == tally.frames == list(range(12))
    assert status.sinks == {"TallySink": {"frames_seen": 12, "notes": 1}}  # the plain sink has no counters
    assert tally.notes == [("before the first frame", None), ("after the run", 11)]


@pytest.mark.parametrize("make, counting, annotating", [
    (lambda tmp: ResultsPublisher(PublisherConfig(endpoint="tcp://127.0.0.1:0")), True, False),
    (lambda tmp: Recorder(tmp, write_masks=False), True, True),
    (lambda tmp: HookRunner([]), True, False),
    (lambda tmp: PlainSink(), False, False),
])
def test_the_shipped_sinks_declare_their_optional_features(make, counting: bool, annotating: bool, tmp_path) -> None:
    sink = make(tmp_path)
    try:
        assert isinstance(sink, Sink)
        assert isinstance(sink, CountingSink) is counting
        assert isinstance(sink, AnnotationSink) is annotating
        if counting:
            counters = require_sink(sink).counters  # type: ignore[attr-defined]
            assert all(isinstance(k, str) and isinstance(v, int) for k, v in counters.items())
    finally:
        sink.close()


def test_calibrated_keeps_the_stage_of_a_movable_source_and_only_then() -> None:
    override = Calibration(pixel_size_nm=3.0)
    sim = SimulatedSource("leave-reenter", seed=0, n_frames=2, fps=25.0)
    wrapped = calibrated(sim, override)
    assert isinstance(wrapped, CalibratedStageSource) and isinstance(wrapped, MovableStage)
    wrapped.move_stage(30.0, -10.0)
    assert sim.stage_position_nm == (30.0, -10.0)

    frames, _ = disk_video(n_frames=2)
    plain = calibrated(ArraySource(frames, Calibration(pixel_size_nm=1.0, fps=10.0)), override)
    assert type(plain) is CalibratedSource and not isinstance(plain, MovableStage)
    assert isinstance(plain, FrameSource)
    plain.open()
    frame = plain.next_frame(0.1)
    assert frame is not None and frame.calibration == Calibration(pixel_size_nm=3.0, fps=10.0)
    assert plain.series is not None and plain.series.calibration == frame.calibration
    with pytest.raises(TypeError, match="ArraySource has no move_stage"):
        CalibratedStageSource(ArraySource(frames), override)


def test_the_simulated_adapter_reaches_the_stage_through_a_calibration_override() -> None:
    sim = SimulatedSource("leave-reenter", seed=0, n_frames=4, fps=25.0)
    cfg = config(calibration={"pixel_size_nm": 2.0},
                 hooks={"hooks": [KEEP_CENTRED], "microscope": "simulated"})
    built = build_service(cfg, source=sim, edits=[Prompt(1, 0, ((128.0, 128.0),), (1,))])
    assert isinstance(built.service.source, CalibratedStageSource)
    assert built.hooks is not None and built.hooks.hook_status()["adapter"]["adapter"] == "simulated"
    built.service.run()
    built.close()


@pytest.mark.parametrize("calibration", [{}, {"pixel_size_nm": 2.0}])
def test_the_simulated_adapter_needs_a_movable_stage(calibration: dict[str, float]) -> None:
    frames, _ = disk_video(n_frames=2)
    cfg = config(calibration=calibration, hooks={"hooks": [KEEP_CENTRED], "microscope": "simulated"})
    with pytest.raises(ConfigError, match="needs the simulator source"):
        build_service(cfg, source=ArraySource(frames))
