"""Rolling statistics published every n frames, each particle's share computed on its own frame."""

from __future__ import annotations

import time

import numpy as np

from sam4em_live.frames import Frame
from sam4em_live.segment.registry import create_segmenter
from sam4em_live.segment.stage import InProcessSegmentStage
from sam4em_live.service.processor import FrameProcessor
from sam4em_live.sim.video import make_prompts
from sam4em_live.stats.rolling import RollingTrackStats
from tests.embedded_helpers import preset_video


class _CountingStats(RollingTrackStats):
    def __init__(self) -> None:
        super().__init__(window_frames=256, max_lag_frames=20, fps=50.0, pixel_size_nm=1.0)
        self.calls: list[tuple[int, int | None]] = []
        self.frame = -1

    def snapshot(self, particle=None):
        self.calls.append((self.frame, particle))
        return super().snapshot(particle)


def test_snapshot_work_is_spread_and_published_every_n_frames() -> None:
    video = preset_video("demo", 31, seed=2)
    prompts = make_prompts(video, frames=(0,))
    stats = _CountingStats()
    processor = FrameProcessor(InProcessSegmentStage(create_segmenter("embedded", {})), stats=stats, stats_every_frames=10)
    published = {}
    for i, pixels in enumerate(video.frames):
        stats.frame = i
        result = processor.process(Frame("demo", i, time.time(), pixels), [p for p in prompts if p.frame == i])
        assert bool(result.stats) == (i % 10 == 0), i
        if result.stats:
            published[i] = result.stats
    particles = sorted(p.particle for p in prompts)
    assert len(particles) == 4
    for start in (10, 20):  # a full interval: one snapshot per particle, each on a different frame
        calls = [(f, pid) for f, pid in stats.calls if start - 9 <= f <= start]
        assert sorted(pid for _, pid in calls) == particles
        assert len({f for f, _ in calls}) == len(particles)
    # What is published is each particle's statistics as of its own frame in the last interval.
    fresh_at_30 = stats.snapshot()
    for pid in particles:
        seen = published[30][pid].frames_seen
        assert 30 - 9 <= seen - 1 <= 30 and published[30][pid].n[0] <= fresh_at_30[pid].n[0]
    assert np.isfinite(published[30][particles[0]].msd_px2[0])


def test_snapshots_are_put_off_one_turn_at_most_while_behind() -> None:
    video = preset_video("demo", 61, seed=2)
    prompts = make_prompts(video, frames=(0,))
    stats = _CountingStats()
    processor = FrameProcessor(InProcessSegmentStage(create_segmenter("embedded", {})), stats=stats, stats_every_frames=10)
    published = {}
    for i, pixels in enumerate(video.frames):
        stats.frame = i
        backlog = 5 if i >= 21 else 0  # live, and behind from frame 21 on
        result = processor.process(Frame("demo", i, time.time(), pixels), [p for p in prompts if p.frame == i],
                                   backlog=backlog)
        assert bool(result.stats) == (i % 10 == 0), i  # still published on time
        if result.stats:
            published[i] = result.stats
    particles = sorted(p.particle for p in prompts)
    before = [(f, pid) for f, pid in stats.calls if 11 <= f <= 20]
    assert sorted(pid for _, pid in before) == particles  # not behind: every turn taken
    for start in (30, 40, 50, 60):  # behind: each particle skips one turn, then takes the next
        taken = sorted(pid for f, pid in stats.calls if start - 9 <= f <= start)
        assert taken == (particles if start in (40, 60) else []), (start, taken)
    for pid in particles:  # what is published is never more than two intervals old
        assert 60 - 20 < published[60][pid].frames_seen <= 61
        assert 50 - 20 < published[50][pid].frames_seen <= 41


def test_many_particles_take_at_most_a_few_snapshots_a_frame_and_each_is_published_in_turn() -> None:
    # 48 particles (more than 10 frames x MAX_SNAPSHOTS_PER_FRAME turns): each turn every 24 frames, at most 2
    # snapshots on any frame (48 at once on the first publishing frame before), every particle published.
    from sam4em_live.service.processor import MAX_SNAPSHOTS_PER_FRAME
    from tools.bench.benchmarks.particle_clips import _prompts, particle_clip

    clip, centres = particle_clip(640, 48, 8, seed=5)
    prompts = _prompts(centres[0])
    stats = _CountingStats()
    processor = FrameProcessor(InProcessSegmentStage(create_segmenter("threshold", {})), stats=stats,
                               stats_every_frames=10)
    published = {}
    order = [*range(len(clip)), *range(len(clip) - 2, 0, -1)]
    for i in range(61):
        stats.frame = i
        result = processor.process(Frame("many", i, time.time(), clip[order[i % len(order)]]), prompts if i == 0 else [])
        if result.stats:
            published[i] = result.stats
    per_frame = [sum(1 for f, _ in stats.calls if f == i) for i in range(61)]
    assert max(per_frame) <= MAX_SNAPSHOTS_PER_FRAME
    particles = sorted(p.particle for p in prompts)
    assert stats.particles() == particles
    assert sorted(published[30]) == particles  # every one has had its turn (24 frames) by the third publication
    for pid in particles:  # and what is published is at most one turn (24 frames) old
        assert 60 - 24 <= published[60][pid].frames_seen - 1 <= 60
