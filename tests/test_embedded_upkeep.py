"""The embedded backend's work after the masks (issue 23, `upkeep`) leaves every frame's masks as they were.

The reference is the flow before the deferral: every learn on its particle's conclusion and the two maps'
updates at the end of `track` (`_InlineSegmenter`). The deferred backend (deferring once ``upkeep`` has been
called), with the pipeline's ``upkeep`` after each frame or with nothing but `track` (which runs the queue
first), must give the same masks and scores, bit for bit, and reach the same state after every frame, over
frames that learn, refresh shapes and update both maps; so must a backend whose caller never calls
``upkeep`` (nothing deferred: a caller may reuse a frame's buffer, as the child process's shared memory
does). The one difference: on a frame whose learn refreshes a shape, the deferred mask reports the pose
it was placed at (the refresh re-centres the pose after the mask went out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from sam4em_live.frames import Frame
from sam4em_live.segment.base import DefersUpkeep
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
from sam4em_live.segment.embedded.upkeep import FrameUpkeep
from sam4em_live.segment.stage import InProcessSegmentStage
from sam4em_live.sim.video import make_prompts
from tests.embedded_helpers import preset_video
from tools.bench.benchmarks.particle_scaling import _prompts, particle_clip

if TYPE_CHECKING:
    from sam4em_live.particles import ParticleMask


class _InlineSegmenter(EmbeddedSegmenter):
    """The reference: learns where they fall, the maps updated before `track` returns."""

    def track(self, frame: Frame, edits: Any = (), seeded: Any = None) -> list[ParticleMask]:
        masks = super().track(frame, edits, seeded)
        self.upkeep()
        return masks

    def _learn_now_or_later(self, pixels: np.ndarray, track: Any, background: float, claims: Any) -> None:
        self._learn(pixels, track, background, claims)


def _clip(name: str) -> tuple[np.ndarray, list]:
    if name == "discs":
        frames, centres = particle_clip(384, 9, 40, seed=3)
        return np.concatenate([frames, frames[::-1]]), _prompts(centres[0])
    video = preset_video(name, 80, seed=1)
    return video.frames, make_prompts(video, frames=(0,), kind="point")


def _same(a: ParticleMask, b: ParticleMask) -> bool:
    """Equal masks and scores; equal ``extras`` but x, y (`_same_pose`)."""
    return ((a.particle, a.present, a.score, a.bbox) == (b.particle, b.present, b.score, b.bbox)
            and {k: v for k, v in a.extras.items() if k not in "xy"} == {k: v for k, v in b.extras.items()
                                                                         if k not in "xy"}
            and (a.crop is None) == (b.crop is None) and (a.crop is None or np.array_equal(a.crop, b.crop)))


def _state(segmenter: EmbeddedSegmenter) -> dict[int, tuple[float, ...]]:
    return {pid: (t.x, t.y, t.angle_deg, t.z_ref, t.memory.n_obs, t.frames_since_update, float(t.memory.appearance.sum()))
            for pid, t in segmenter._tracks.items()}


@pytest.mark.parametrize("clip", ["discs", "crossing"])
def test_masks_are_those_of_the_inline_flow(clip: str) -> None:
    frames, prompts = _clip(clip)
    reference, after_sinks, on_next_track, never = (_InlineSegmenter(), EmbeddedSegmenter(), EmbeddedSegmenter(),
                                                    EmbeddedSegmenter())
    on_next_track.upkeep()  # deferring from now on, the queue left to the next frame's `track`
    deferred = moved = 0
    for index, pixels in enumerate(frames):
        edits = prompts if index == 0 else []
        expected = reference.track(Frame("upkeep", index, 0.0, pixels), edits)
        assert len(never._upkeep) == 0
        for segmenter in (after_sinks, on_next_track, never):
            masks = segmenter.track(Frame("upkeep", index, 0.0, pixels), edits)
            assert len(masks) == len(expected) and all(map(_same, masks, expected)), (clip, index)
            if segmenter is never:
                assert [m.extras for m in masks] == [m.extras for m in expected], (clip, index)
        deferred += len(after_sinks._upkeep) - 2  # the learns queued (the two maps' updates every frame)
        after_sinks.upkeep()
        assert len(after_sinks._upkeep) == 0
        assert _state(after_sinks) == _state(reference) == _state(never), (clip, index)
        for mask, reference_mask in zip(masks, expected, strict=True):
            if mask.extras != reference_mask.extras:  # only a refresh's re-centring, made after the mask
                assert reference._tracks[mask.particle].frames_since_update == 0, (clip, index, mask.particle)
                moved += 1
    assert deferred > 0  # the learns did wait


def test_a_deferred_mask_reports_the_pose_it_was_placed_at() -> None:
    """The reported pose is the frame's match (a refresh's re-centring comes after, in the upkeep)."""
    frames, prompts = _clip("discs")
    segmenter = EmbeddedSegmenter()
    segmenter.upkeep()
    recentred = 0
    for index, pixels in enumerate(frames):
        masks = segmenter.track(Frame("upkeep", index, 0.0, pixels), prompts if index == 0 else [])
        for mask in masks:
            track = segmenter._tracks[mask.particle]
            if mask.present:
                assert (mask.extras["x"], mask.extras["y"]) == (track.x, track.y), (index, mask.particle)
        segmenter.upkeep()
        recentred += sum(m.present and (m.extras["x"], m.extras["y"]) != (segmenter._tracks[m.particle].x,
                                                                          segmenter._tracks[m.particle].y)
                         for m in masks)
    assert recentred > 0  # refreshes did re-centre poses after their masks went out


def test_the_queue_runs_in_order_and_once() -> None:
    upkeep, ran = FrameUpkeep(), []
    upkeep.defer(lambda: ran.append(1))
    upkeep.defer(lambda: ran.append(2))
    assert len(upkeep) == 2
    upkeep.run()
    upkeep.run()
    assert ran == [1, 2] and len(upkeep) == 0


def test_the_stage_runs_the_upkeep_only_between_frames() -> None:
    frames, prompts = _clip("discs")
    segmenter = EmbeddedSegmenter()
    assert isinstance(segmenter, DefersUpkeep)
    stage = InProcessSegmentStage(segmenter)
    try:
        stage.submit(Frame("upkeep", 0, 0.0, frames[0]), prompts)
        assert len(segmenter._upkeep) == 0  # not deferring before the first upkeep
        stage.collect()
        stage.upkeep()
        stage.submit(Frame("upkeep", 1, 0.0, frames[1]), [])
        queued = len(segmenter._upkeep)
        stage.upkeep()  # a frame in flight: not yet
        assert len(segmenter._upkeep) == queued > 0
        stage.collect()
        stage.upkeep()
        assert len(segmenter._upkeep) == 0
    finally:
        stage.close()


class _MaskSink:
    """The last sink: keeps every frame's masks (and whether the backend still had work queued then)."""

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter
        self.masks: list[list[ParticleMask]] = []
        self.queued: list[int] = []

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        self.masks.append(list(result.masks))
        self.queued.append(len(self.segmenter._upkeep))

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_service_runs_the_upkeep_after_the_sinks(tmp_path) -> None:
    from sam4em_live.config import ServiceConfig
    from sam4em_live.service.builder import build_service
    from sam4em_live.sources.array_source import ArraySource

    frames, centres = particle_clip(256, 4, 40, seed=5)
    prompts = _prompts(centres[0])
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": "tcp://127.0.0.1:0"}, "segmenter": {"backend": "embedded"},
        "recorder": {"enabled": False}, "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"}})
    built = build_service(config, source=ArraySource(frames), edits=prompts)
    stage = built.service.stage
    assert isinstance(stage, InProcessSegmentStage)
    sink = _MaskSink(stage._segmenter)
    built.service.sinks.append(sink)
    try:
        status = built.service.run()
    finally:
        built.close()
    assert status.frames_processed == len(frames) == len(sink.masks)
    assert sum(n > 0 for n in sink.queued[1:]) == len(frames) - 1  # work still queued when each result went out
    reference = _InlineSegmenter()
    for index, pixels in enumerate(frames):
        expected = reference.track(Frame("array", index, 0.0, pixels), prompts if index == 0 else [])
        assert len(sink.masks[index]) == len(expected) and all(map(_same, sink.masks[index], expected)), index
