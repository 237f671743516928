"""Steady shape refreshes of particles prompted together fall on different frames (issue 23, the p99 at 16).

Once its memory is full a particle refreshes its shape every ``4 * REFRESH_EVERY`` learns, on its own learning
phase (`TrackedParticle.refresh_phase`). A refresh is the costliest step of a frame (~5-7 ms at 1024²): two on
one frame made the costliest frames of 16 particles. A refresh is seen as a new `TemplateBanks` object.
"""

from __future__ import annotations

from collections import Counter

from sam4em_live.frames import Frame
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
from tools.bench.benchmarks.particle_clips import _prompts, particle_clip

PARTICLES, FRAMES = 16, 320  # the steady refreshes of one 128-frame turn come ~130-165 and ~260-295 frames in


def test_sixteen_particles_prompted_together_never_refresh_two_steady_memories_on_one_frame() -> None:
    clip, centres = particle_clip(512, PARTICLES, 24, seed=3)
    segmenter = EmbeddedSegmenter(EmbeddedOptions())
    order = [*range(len(clip)), *range(len(clip) - 2, 0, -1)]  # back and forth: a long clip of a short one
    banks: dict[int, int] = {}
    steady: Counter[int] = Counter()
    for i in range(FRAMES):
        full = {pid for pid, t in segmenter._tracks.items() if t.memory.n_obs >= segmenter.options.memory_frames}
        segmenter.track(Frame("t", i, 0.0, clip[order[i % len(order)]]), _prompts(centres[0]) if i == 0 else [])
        for pid, track in segmenter._tracks.items():
            if pid in banks and id(track.memory.banks) != banks[pid] and pid in full:
                steady[i] += 1
            banks[pid] = id(track.memory.banks)
    assert all(t.present for t in segmenter._tracks.values())
    assert sum(steady.values()) >= 2 * PARTICLES - 2  # each refreshed about twice in steady state
    assert max(steady.values()) == 1, sorted(f for f, n in steady.items() if n > 1)
