"""Memories filling together while the live worker stays behind still get their shape refreshes (issue 23).

While frames wait (`note_backlog`), a filling memory learns only every 4th frame (`MAX_DEFERRED_LEARNING`),
and memories filling together refresh only on odd frames (`FILLING_REFRESH_SPACING_FRAMES`): learns that fell
on even frames were never refreshed until the backlog cleared. A refresh is seen from the outside as a new
`TemplateBanks` object on the particle's memory.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from sam4em_live.frames import Frame
from sam4em_live.segment.embedded.learning_schedule import (
    FILLING_MEMORIES_PER_REFRESH,
    FILLING_REFRESH_SPACING_FRAMES,
    MAX_DEFERRED_LEARNING,
)
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
from tools.bench.benchmarks.particle_clips import _prompts, particle_clip

FRAMES = 120
PARTICLES = 4


def _live_behind_from(start: int) -> tuple[dict[int, list[int]], dict[int, int]]:
    """({particle: frames its filling memory was refreshed on}, {particle: observations}) with 5 frames waiting
    behind every frame from ``start`` on, 4 particles prompted on frame 0, the upkeep deferred as live."""
    clip, centres = particle_clip(384, PARTICLES, 12, seed=3)
    prompts = _prompts(centres[0])
    segmenter = EmbeddedSegmenter(EmbeddedOptions())
    segmenter.upkeep()  # deferring from the first frame on, as the live service
    order = [*range(len(clip)), *range(len(clip) - 2, 0, -1)]
    banks: dict[int, int] = {}
    refreshed: dict[int, list[int]] = {p.particle: [] for p in prompts}
    for i in range(FRAMES):
        segmenter.note_backlog(5 if i >= start else 0)
        filling = {pid for pid, t in segmenter._tracks.items() if t.memory.n_obs < segmenter.options.memory_frames}
        segmenter.track(Frame("t", i, 0.0, clip[order[i % len(order)]]), prompts if i == 0 else [])
        segmenter.upkeep()
        for pid, track in segmenter._tracks.items():
            if pid in banks and id(track.memory.banks) != banks[pid] and pid in filling:
                refreshed[pid].append(i)
            banks[pid] = id(track.memory.banks)
    assert all(t.present for t in segmenter._tracks.values())
    return refreshed, {pid: t.memory.n_obs for pid, t in segmenter._tracks.items()}


@pytest.mark.parametrize("start", [1, 2, 3, 4])  # the backlog starting on either parity
def test_filling_memories_under_a_sustained_backlog_are_refreshed_in_turn(start: int) -> None:
    refreshed, observations = _live_behind_from(start)
    # Each memory is refreshed, whichever parity its learns fell on (none before the fix where they fell on
    # even frames: 0 refreshes in these 120 frames).
    assert all(len(frames) >= 2 for frames in refreshed.values()), refreshed
    frames = sorted(f for fs in refreshed.values() for f in fs)
    assert all(f % FILLING_REFRESH_SPACING_FRAMES == 1 for f in frames), refreshed  # off the maps' frames
    assert max(Counter(frames).values()) <= -(-PARTICLES // FILLING_MEMORIES_PER_REFRESH), refreshed
    # No work added while behind: a learn every (MAX_DEFERRED_LEARNING + 1)th frame at most after the first
    # deferral (the landing's observation and the learns before the backlog besides), and refresh turns on
    # every second of those learns, as often per learn as without a backlog (one every 2nd learn).
    most = 1 + start + -(-(FRAMES - start) // (MAX_DEFERRED_LEARNING + 1))
    assert all(n <= most for n in observations.values()), observations
    behind = [f for f in frames if f >= start + MAX_DEFERRED_LEARNING + 1]
    assert all(b - a >= 2 * (MAX_DEFERRED_LEARNING + 1) for a, b in itertools.pairwise(behind)), refreshed
