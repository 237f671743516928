"""The `SegmentStage` seam: in process and in a real child process, the same masks, edits and results."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from sam4em_live.config import ServiceConfig
from sam4em_live.frames import Frame
from sam4em_live.particles import ParticleEdit, ParticleMask, Prompt, RemoveParticle
from sam4em_live.results import FrameResult
from sam4em_live.segment.process_host import SegmenterProcess
from sam4em_live.segment.registry import create_segmenter
from sam4em_live.segment.stage import InProcessSegmentStage, SegmentationFailed, SegmentOutcome, SegmentStage
from sam4em_live.segment.threshold import ThresholdSegmenter
from sam4em_live.service.processor import FrameProcessor
from sam4em_live.service.service import Service
from sam4em_live.sim.video import make_prompts
from sam4em_live.sources.array_source import ArraySource
from sam4em_live.stats.rolling import RollingTrackStats
from tests.conftest import disk_video
from tests.embedded_helpers import preset_video

KINDS = ("in_process", "child_process")
PROMPTS = [Prompt(1, 0, ((30.0, 40.0),), (1,)), Prompt(2, 0, box=(60.0, 50.0, 80.0, 70.0))]
# Inside the frame (valid) but on plain background: the threshold backend refuses them with PromptError(3).
BACKGROUND_POINT = Prompt(3, 0, ((110.0, 10.0),), (1,))
BACKGROUND_BOX = Prompt(3, 0, box=(100.0, 2.0, 120.0, 18.0))


def _stage(kind: str, backend: str) -> SegmentStage:
    if kind == "child_process":
        return SegmenterProcess(backend, {}, depth=2)
    return InProcessSegmentStage(create_segmenter(backend, {}))


def _drive(stage: SegmentStage, frames: np.ndarray, edits: Mapping[int, Sequence[ParticleEdit]]
           ) -> list[SegmentOutcome]:
    """Every frame through ``stage``, as many in flight as it takes (the worker loop's way)."""
    outcomes: list[SegmentOutcome] = []
    for i, pixels in enumerate(frames):
        frame = Frame("clip", i, 0.0, pixels)
        if not stage.fits(frame):
            outcome = stage.collect(None)
            assert outcome is not None
            outcomes.append(outcome)
        stage.submit(frame, edits.get(i, []))
        assert stage.in_flight <= stage.depth
    while stage.in_flight:
        outcome = stage.collect(None)
        assert outcome is not None
        outcomes.append(outcome)
    return outcomes


def _same(a: ParticleMask, b: ParticleMask) -> bool:
    return (a.particle == b.particle and a.present == b.present and a.bbox == b.bbox and a.score == b.score
            and (a.crop is None if b.crop is None else a.crop is not None and np.array_equal(a.crop, b.crop)))


def _same_masks(a: Sequence[ParticleMask], b: Sequence[ParticleMask]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def test_both_stages_give_the_same_masks_for_the_same_frames_and_edits() -> None:
    video = preset_video("crossing", 24, seed=1)
    prompts = make_prompts(video, frames=(0,))
    cols = video.frames.shape[2]
    outside = Prompt(9, 5, ((cols + 50.0, 5.0),), (1,))  # not validated here: the backend itself refuses it
    edits: dict[int, list[ParticleEdit]] = {0: list(prompts), 5: [outside], 12: [RemoveParticle(prompts[0].particle, 12)]}
    runs = {}
    for kind in KINDS:
        stage = _stage(kind, "embedded")
        try:
            assert isinstance(stage, SegmentStage)
            assert stage.depth == (2 if kind == "child_process" else 1)
            runs[kind] = (_drive(stage, video.frames, edits), stage.particles(), stage.describe())
        finally:
            stage.close()
    (inside, inside_particles, inside_describe), (child, child_particles, child_describe) = runs.values()
    assert [o.frame.index for o in child] == [o.frame.index for o in inside] == list(range(len(video.frames)))
    for a, b in zip(inside, child, strict=True):
        assert _same_masks(a.masks, b.masks), a.frame.index
        assert a.rejected == b.rejected
        assert [r.edit for r in a.rejected] == ([outside] if a.frame.index == 5 else [])
        assert a.segment_ms > 0 and b.segment_ms > 0
    assert "outside" in inside[5].rejected[0].reason
    assert inside_particles == child_particles == [prompts[1].particle]  # the first was removed at frame 12
    assert child_describe == {**inside_describe, "process": True}


@pytest.mark.parametrize("kind", KINDS)
def test_a_prompt_error_drops_only_that_particles_edits(kind: str) -> None:
    frames, _ = disk_video(n_frames=6)
    correction = Prompt(1, 2, ((32.0, 41.0),), (1,))
    edits = {0: [PROMPTS[0], BACKGROUND_POINT, PROMPTS[1], BACKGROUND_BOX],
             2: [BACKGROUND_POINT.at_frame(2), correction]}
    stage = _stage(kind, "threshold")
    try:
        outcomes = _drive(stage, frames, edits)
        particles = stage.particles()
    finally:
        stage.close()
    assert [r.edit for r in outcomes[0].rejected] == [BACKGROUND_POINT, BACKGROUND_BOX]  # both of particle 3's
    assert all("no dark particle" in r.reason for r in outcomes[0].rejected)
    assert [r.edit for r in outcomes[2].rejected] == [BACKGROUND_POINT.at_frame(2)]
    assert not any(o.rejected for i, o in enumerate(outcomes) if i not in (0, 2))
    assert particles == [1, 2]
    assert all([m.particle for m in o.masks] == [1, 2] and all(m.present for m in o.masks) for o in outcomes)
    # The other edits of those frames took effect exactly as if the refused ones had never been sent.
    valid_only = {0: [PROMPTS[0], PROMPTS[1]], 2: [correction]}
    reference = _drive(InProcessSegmentStage(ThresholdSegmenter()), frames, valid_only)
    assert all(_same_masks(a.masks, b.masks) for a, b in zip(outcomes, reference, strict=True))


def _run_processor(stage: SegmentStage, frames: np.ndarray, edits: Mapping[int, Sequence[ParticleEdit]]
                   ) -> tuple[FrameProcessor, list[FrameResult], list[int]]:
    """Every frame through a `FrameProcessor` on ``stage``; returns it, the results and the failed frames."""
    processor = FrameProcessor(stage, stats=RollingTrackStats(64, 8, 50.0, 2.0), stats_every_frames=5)
    results: list[FrameResult] = []
    failed: list[int] = []

    def collect_one() -> None:
        try:
            result = processor.collect(None)
        except SegmentationFailed as exc:
            failed.append(exc.frame_index)
            return
        assert result is not None
        results.append(result)

    for i, pixels in enumerate(frames):
        frame = Frame("clip", i, float(i), pixels)
        if not stage.fits(frame):
            collect_one()
        processor.submit(frame, edits.get(i, []))
    while stage.in_flight:
        collect_one()
    return processor, results, failed


def _same_result(a: FrameResult, b: FrameResult) -> None:
    assert a.index == b.index and _same_masks(a.masks, b.masks)
    np.testing.assert_equal([dataclasses.astuple(m) for m in a.measurements],
                            [dataclasses.astuple(m) for m in b.measurements])
    assert a.stats == b.stats and a.events == b.events


def test_the_frame_processor_gives_the_same_results_on_either_stage() -> None:
    frames, _ = disk_video(n_frames=16)
    outside = Prompt(4, 3, ((500.0, 5.0),), (1,))  # refused by the processor's validation, never sent
    edits: dict[int, list[ParticleEdit]] = {0: [PROMPTS[0], BACKGROUND_POINT, PROMPTS[1]], 3: [outside],
                                            9: [RemoveParticle(2, 9)]}
    runs = {}
    for kind in KINDS:
        stage = _stage(kind, "threshold")
        try:
            runs[kind] = _run_processor(stage, frames, edits)
        finally:
            stage.close()
    (p_in, inside, failed_in), (p_child, child, failed_child) = runs.values()
    assert failed_in == failed_child == []
    assert [r.index for r in inside] == [r.index for r in child] == list(range(16))
    for a, b in zip(inside, child, strict=True):
        _same_result(a, b)
    assert p_in.prompt_errors == p_child.prompt_errors == 2
    rejected = [(e.frame, e.particle) for r in inside for e in r.events if e.kind == "prompt_rejected"]
    assert rejected == [(0, 3), (3, 4)]
    assert sorted(inside[10].stats) == [1] and sorted(inside[5].stats) == [1, 2]  # particle 2 removed at 9
    assert [m.particle for m in inside[15].measurements] == [1]
    assert p_in.last_measurements.keys() == p_child.last_measurements.keys() == {1}


class _FailsOnFrame(ThresholdSegmenter):
    """The threshold backend, except that it cannot segment one frame (a backend bug or a bad frame)."""

    def __init__(self, bad_frame: int) -> None:
        super().__init__()
        self.bad_frame = bad_frame

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = ()) -> list[ParticleMask]:
        if frame.index == self.bad_frame:
            raise ValueError("cannot segment this frame")
        return super().track(frame, edits)


def test_a_frame_the_backend_fails_on_is_reported_at_collect_and_the_stream_goes_on() -> None:
    frames, _ = disk_video(n_frames=6)
    outside = Prompt(4, 2, ((500.0, 5.0),), (1,))  # its rejection belongs to frame 2, which then fails
    stage = InProcessSegmentStage(_FailsOnFrame(bad_frame=2))
    _processor, results, failed = _run_processor(stage, frames, {0: PROMPTS, 2: [outside], 3: [outside.at_frame(3)]})
    assert failed == [2] and [r.index for r in results] == [0, 1, 3, 4, 5]
    # Frame 2's pending edits went with it: frame 3 carries only its own rejection.
    assert [(e.frame, e.particle) for e in results[2].events] == [(3, 4)]
    assert all([m.particle for m in r.masks] == [1, 2] for r in results)
    with pytest.raises(RuntimeError, match="nothing in flight"):
        stage.collect(None)


def test_the_service_takes_a_segment_stage_not_a_bare_segmenter() -> None:
    frames, _ = disk_video(n_frames=2)
    with pytest.raises(TypeError, match="not a SegmentStage"):
        Service(ServiceConfig(), ArraySource(frames), ThresholdSegmenter())  # type: ignore[arg-type]
    assert Service(ServiceConfig(), ArraySource(frames), InProcessSegmentStage(ThresholdSegmenter())).processor is None
