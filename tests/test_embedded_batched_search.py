"""The batched near searches (issue 23) give, particle for particle, the per-particle search's poses and masks.

The per-particle functions (`search.coarse_search`, `search.fine_search`, `segmenter._search`) are the
reference: on real frames (the simulator's rods and spheres, the dense grid of discs of the
particle-scaling benchmark) the batched path must give the same floats, not merely close ones.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from sam4em_live.frames import Frame
from sam4em_live.segment.embedded import batched_raster, batched_search, pose_search, search
from sam4em_live.segment.embedded import segmenter as segmenter_module
from sam4em_live.segment.embedded import window as window_module
from sam4em_live.segment.embedded.batched_search import NearAnswers, batched_near_searches
from sam4em_live.segment.embedded.batched_surface import prior_penalties
from sam4em_live.segment.embedded.search import MotionPrior, PoseEstimate
from sam4em_live.segment.registry import create_segmenter
from sam4em_live.sim.video import make_prompts
from tests.embedded_helpers import preset_video
from tools.bench.benchmarks.particle_scaling import _prompts, particle_clip


def _clip(name: str) -> tuple[np.ndarray, list]:
    """Frames and frame-0 prompts: a simulator preset (rods turn: the angle paths) or the discs' grid."""
    if name == "discs":
        frames, centres = particle_clip(384, 9, 24, seed=3)
        return frames, _prompts(centres[0])
    video = preset_video(name, 24, seed=1)
    return video.frames, make_prompts(video, frames=(0,), kind="point")


@pytest.mark.parametrize("clip", ["multi-1024", "crossing", "discs"])
def test_batched_near_searches_give_the_poses_of_one_search_at_a_time(clip: str, monkeypatch) -> None:
    monkeypatch.setattr(batched_search, "MIN_BATCH", 1)
    monkeypatch.setattr(batched_search, "MIN_GROUP", 1)  # batch even two particles
    frames, prompts = _clip(clip)
    segmenter = create_segmenter("embedded", {})
    settled = wider = 0
    for index, pixels in enumerate(frames):
        tracks = [t for t in segmenter._tracks.values() if t.present]
        if tracks:
            # The reference on a copy: the searches count their noise measurements, so each path runs once.
            reference = copy.deepcopy(segmenter)
            answers = batched_near_searches(pixels, tracks, [], segmenter._near_windows(pixels, tracks, []),
                                            segmenter.options)
            ref_tracks = [reference._tracks[t.particle] for t in tracks]
            ref_near = reference._near_windows(pixels, ref_tracks, [])
            for track in ref_tracks:
                near = ref_near.get(track.particle)
                if track.particle in answers.settled:
                    estimate, background = reference._search(pixels, track, [], prepared=near)
                    assert answers.settled[track.particle] == (estimate, background), (index, track.particle)
                    settled += 1
                elif track.particle in answers.wider:
                    prior = near.prior
                    near_only = reference._search_window(pixels, track, [], prior.within(
                        segmenter.options.near_search_radius_px), prior, near=True, prepared=near)
                    estimate = near_only.estimate
                    assert not (estimate is not None and estimate.z >= 0.7 * track.z_ref and math.hypot(
                        estimate.x - prior.x, estimate.y - prior.y) <= segmenter.options.near_search_radius_px
                        - track.memory.coarse_factor), (index, track.particle)
                    wider += 1
        segmenter.track(Frame(clip, index, 0.0, pixels), [p for p in prompts if p.frame == index])
    assert settled >= 10, (settled, wider)  # crossing: near the small frame's edge most windows are masked


@pytest.mark.parametrize("min_group", [1, 3])  # 3: stacks of one or two go through the reference functions
@pytest.mark.parametrize("clip", ["multi-1024", "crossing", "discs"])
def test_tracking_with_the_batched_path_gives_the_masks_of_the_per_particle_path(clip: str, min_group: int,
                                                                                 monkeypatch) -> None:
    monkeypatch.setattr(batched_search, "MIN_BATCH", 1)
    monkeypatch.setattr(batched_search, "MIN_GROUP", min_group)
    monkeypatch.setattr(batched_raster, "MIN_STACK", 1)
    monkeypatch.setattr(batched_raster, "MIN_POSES", 1)
    frames, prompts = _clip(clip)
    batched = create_segmenter("embedded", {})
    one_at_a_time = create_segmenter("embedded", {})
    answered: list[int] = []

    def spy(*args, **kwargs) -> NearAnswers:
        answers = batched_near_searches(*args, **kwargs)
        answered.append(len(answers.settled))
        return answers

    for index, pixels in enumerate(frames):
        edits = [p for p in prompts if p.frame == index]
        monkeypatch.setattr(segmenter_module, "batched_near_searches", spy)
        monkeypatch.setattr(segmenter_module, "placements", batched_raster.placements)
        a = batched.track(Frame(clip, index, 0.0, pixels), edits)
        monkeypatch.setattr(segmenter_module, "batched_near_searches", lambda *args, **kwargs: NearAnswers({}, {}))
        monkeypatch.setattr(segmenter_module, "placements", _one_mask_at_a_time)
        b = one_at_a_time.track(Frame(clip, index, 0.0, pixels), edits)
        assert [(m.particle, m.present, m.score, m.bbox, m.extras) for m in a] == \
            [(m.particle, m.present, m.score, m.bbox, m.extras) for m in b], index
        assert all(x.crop is None or np.array_equal(x.crop, y.crop) for x, y in zip(a, b, strict=True))
    assert sum(answered) >= 10  # the batched path really answered


def _one_mask_at_a_time(memories: list, estimates: list, shape: tuple[int, int]) -> list:
    return [None if e is None else m.rasterize(e.x, e.y, e.angle_deg, shape)
            for m, e in zip(memories, estimates, strict=True)]


@pytest.mark.parametrize("clip", ["multi-1024", "discs"])
def test_stacked_masks_equal_one_rasterisation_at_a_time(clip: str, monkeypatch) -> None:
    monkeypatch.setattr(batched_raster, "MIN_STACK", 1)
    monkeypatch.setattr(batched_raster, "MIN_POSES", 1)
    frames, prompts = _clip(clip)
    segmenter = create_segmenter("embedded", {})
    for index, pixels in enumerate(frames[:6]):  # learned shapes: rods and spheres of a few sizes
        segmenter.track(Frame(clip, index, 0.0, pixels), [p for p in prompts if p.frame == index])
    memories = [t.memory for t in segmenter._tracks.values()]
    rng = np.random.default_rng(2)
    rows, cols = frames.shape[1:]
    count = 400  # poses in the frame, across its edges and wholly outside it, at every angle; some None
    chosen = [memories[i] for i in rng.integers(0, len(memories), count)]
    estimates = [None if i % 17 == 0 else PoseEstimate(float(rng.uniform(-40, cols + 40)),
                                                       float(rng.uniform(-40, rows + 40)),
                                                       float(rng.uniform(-360, 360)), 5.0, 1.0)
                 for i in range(count)]
    stacked = batched_raster.placements(chosen, estimates, (rows, cols))
    reference = _one_mask_at_a_time(chosen, estimates, (rows, cols))
    for i, (together, one) in enumerate(zip(stacked, reference, strict=True)):
        assert (together is None) == (one is None), i
        if one is not None:
            assert together.box == one.box and together.area_px == one.area_px, i
            assert together.crop.dtype == one.crop.dtype and np.array_equal(together.crop, one.crop), i
    assert 0 < sum(p is None for p in reference) < count // 3


def test_prior_penalties_equal_the_per_search_prior() -> None:
    rng = np.random.default_rng(5)
    for period, count, radius in ((180.0, 9, 16.0), (180.0, 3, 48.0), (90.0, 5, math.inf), (0.0, 1, 16.0),
                                  (120.0, 12, 30.0)):
        priors = [MotionPrior(float(rng.uniform(0, 500)), float(rng.uniform(0, 500)), float(rng.uniform(-200, 200)),
                              radius, 6.0, 30.0, 0.65, 1.0) for _ in range(4)]
        cols, rows = 7, 5
        grid_x = np.stack([np.arange(cols, dtype=np.float32) * 3 + np.float32(p.x - 9) for p in priors])
        grid_y = np.stack([np.arange(rows, dtype=np.float32) * 3 + np.float32(p.y - 6) for p in priors])
        angles = (rng.uniform(0, period or 1, (4, count))).astype(np.float32)
        together = prior_penalties(grid_x, grid_y, angles, priors, period)
        for i, prior in enumerate(priors):
            reference = search._prior_penalty(grid_x[i], grid_y[i], angles[i], prior, period)
            assert together[i].dtype == reference.dtype
            assert np.array_equal(together[i], reference), (period, count, i)


def test_stacked_block_darkness_equals_one_window_at_a_time() -> None:
    rng = np.random.default_rng(11)
    pixels = rng.poisson(900.0, (200, 220)).astype(np.uint16)
    pixels[50, 60] = np.iinfo(np.uint16).max  # a saturated pixel: that window is refused, as by block_darkness
    origins = [(int(x), int(y)) for x, y in rng.integers(-10, 190, (40, 2))] + [(55, 45)]
    for factor, clip_pixels in ((3, False), (1, True), (2, True), (4, False)):
        edge = 12 * factor
        polarities = [float(rng.choice([-1.0, 1.0])) for _ in origins]
        backgrounds = [float(rng.uniform(700, 1100)) for _ in origins] if clip_pixels else None
        stacked = window_module.block_darkness_stack(pixels, origins, edge, factor, polarities, backgrounds,
                                                     clip_pixels)
        served = 0
        for i, (x0, y0) in enumerate(origins):
            one = window_module.block_darkness(pixels, x0, y0, edge, factor, polarities[i],
                                               None if backgrounds is None else backgrounds[i], clip_pixels)
            assert (stacked[i] is None) == (one is None), (factor, i)
            if one is not None:
                assert stacked[i].background == one.background and stacked[i].valid is None
                assert stacked[i].contrast.dtype == one.contrast.dtype
                assert np.array_equal(stacked[i].contrast, one.contrast), (factor, i)
                served += 1
        assert 10 < served < len(origins)


def test_the_near_acceptance_is_the_segmenters() -> None:
    assert batched_search.NEAR_ACCEPT_Z_FRACTION == pose_search.NEAR_ACCEPT_Z_FRACTION
