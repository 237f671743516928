"""Shape refreshes of filling memories are spread over frames (issue 23: no frame lost when 4 particles land).

A refresh is seen from the outside as a new `TemplateBanks` object on the particle's memory.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from sam4em_live.frames import Frame
from sam4em_live.segment.embedded.learning_schedule import (
    FILLING_MEMORIES_PER_REFRESH,
    FILLING_REFRESH_SPACING_FRAMES,
)
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
from sam4em_live.segment.embedded.tracker import REFRESH_EVERY_YOUNG, YOUNG_MEMORY_FRAMES
from tools.bench.benchmarks.particle_clips import _prompts, particle_clip

if TYPE_CHECKING:
    import numpy as np

FRAMES = 70


def _refresh_frames(clip: np.ndarray, prompts: list, frames: int = FRAMES) -> dict[int, list[int]]:
    """{particle: frames on which its memory was refreshed while filling}, prompts on frame 0."""
    segmenter = EmbeddedSegmenter(EmbeddedOptions())
    order = [*range(len(clip)), *range(len(clip) - 2, 0, -1)]
    banks: dict[int, int] = {}
    refreshed: dict[int, list[int]] = {p.particle: [] for p in prompts}
    for i in range(frames):
        filling = {pid for pid, t in segmenter._tracks.items() if t.memory.n_obs < segmenter.options.memory_frames}
        segmenter.track(Frame("t", i, 0.0, clip[order[i % len(order)]]), prompts if i == 0 else [])
        for pid, track in segmenter._tracks.items():
            if pid in banks and id(track.memory.banks) != banks[pid] and pid in filling:
                refreshed[pid].append(i)
            banks[pid] = id(track.memory.banks)
    assert all(t.present for t in segmenter._tracks.values())
    assert all(t.memory.n_obs >= segmenter.options.memory_frames for t in segmenter._tracks.values())
    return refreshed


@pytest.mark.parametrize("particles, size", [(4, 384), (9, 512)])
def test_memories_filling_together_refresh_a_few_at_a_time_on_odd_frames_and_none_is_starved(particles: int,
                                                                                              size: int) -> None:
    clip, centres = particle_clip(size, particles, 12, seed=3)
    refreshed = _refresh_frames(clip, _prompts(centres[0]))
    frames = [f for fs in refreshed.values() for f in fs]
    per_frame = -(-particles // FILLING_MEMORIES_PER_REFRESH)  # 1 for 4 memories, 3 for 9
    assert max(Counter(frames).values()) <= per_frame, f"too many filling memories refreshed on one frame: {refreshed}"
    assert all(f % FILLING_REFRESH_SPACING_FRAMES == 1 for f in frames)  # off the maps' (even) update frames
    # Each memory is refreshed several times while filling (young, then with the edge fit), none left behind.
    assert all(len(fs) >= 3 for fs in refreshed.values()), refreshed
    assert all(any(f > YOUNG_MEMORY_FRAMES for f in fs) for fs in refreshed.values()), refreshed


def test_a_lone_filling_memory_refreshes_on_its_own_schedule() -> None:
    # One particle (one click mid-stream, or the single-particle accuracy set) never waits for a turn:
    # learning on every frame, it refreshes every 2nd learn while young, whatever the frame's parity.
    clip, centres = particle_clip(256, 1, 12, seed=4)
    (frames,) = _refresh_frames(clip, _prompts(centres[0])).values()
    young = [f for f in frames if f < YOUNG_MEMORY_FRAMES]
    assert young == list(range(REFRESH_EVERY_YOUNG, YOUNG_MEMORY_FRAMES, REFRESH_EVERY_YOUNG))


def test_two_filling_memories_refresh_on_their_own_schedules() -> None:
    # Two particles prompted together keep the schedule of a lone memory: the turns of many cost two-particle
    # clips 0.3-1.1 J&F in every condition of the robustness matrix (their refreshes came every 4th frame).
    clip, centres = particle_clip(256, 2, 12, seed=5)
    refreshed = _refresh_frames(clip, _prompts(centres[0]))
    assert len(refreshed) == 2
    for frames in refreshed.values():
        young = [f for f in frames if f < YOUNG_MEMORY_FRAMES]
        assert len(young) >= len(range(REFRESH_EVERY_YOUNG, YOUNG_MEMORY_FRAMES, REFRESH_EVERY_YOUNG)) - 1, refreshed
        assert all(b - a == REFRESH_EVERY_YOUNG for a, b in itertools.pairwise(young)), refreshed
