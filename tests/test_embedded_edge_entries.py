"""A newcomer entering through the frame's edge does not take a lost particle's id (`edge_entries`; issue 21).

End to end: discovery-entry's clip (`tools.bench.benchmarks.discovery_entry.entering_clip`: the scene's sphere
slides in through the right edge from frame 30 on) of `fade-edge-artifact`, the rod prompted on frame 0 and
fading out inside the field from frame 36 to 45. Before `edge_entries`, the rod's id went to the sphere at
frame ~52 and stayed there to the end (68 of 120 frames), so the rod was found on only 41 of its 86 visible
frames. Rules on their own: a real `TrackedParticle` and the frame geometry.
"""

from __future__ import annotations

import math

import numpy as np

from sam4em_live.frames import Frame
from sam4em_live.segment.base import track_with_retries
from sam4em_live.segment.embedded.edge_entries import (
    ENTERED,
    FORGET_FRAMES,
    NEWCOMER,
    EdgeEntries,
    cutting_edges,
)
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.segment.embedded.tracker import TrackedParticle

SHAPE = (256, 256)


def _lost_disc(x: float, y: float) -> TrackedParticle:
    """A disc of radius 12 last seen at (x, y), lost for 10 frames."""
    rows, cols = np.indices((41, 41))
    mask = (rows - 20) ** 2 + (cols - 20) ** 2 <= 144
    track = TrackedParticle(1, ShapeMemory(mask.astype(np.float32), mask, EmbeddedOptions()), 1.0, x, y, 0.0,
                            amplitude_ref=1.0, z_ref=12.0)
    for _ in range(10):
        track.lose()
    return track


def test_a_particle_lost_inside_the_field_is_not_found_coming_in_through_an_edge() -> None:
    entries = EdgeEntries()
    faded = _lost_disc(70.0, 110.0)
    assert entries.refusal(faded, 250.0, 150.0, 0.7, 0.9, SHAPE, frame=50) == ENTERED
    # Wholly inside a few frames later (18 px further in): still the newcomer, and followed.
    assert entries.refusal(faded, 232.0, 150.0, 1.0, 0.9, SHAPE, frame=54) == NEWCOMER
    assert entries.refusal(faded, 214.0, 152.0, 1.0, 0.9, SHAPE, frame=58) == NEWCOMER
    # Elsewhere in the field the lost particle may be found again (the gate's other tests decide).
    assert entries.refusal(faded, 80.0, 120.0, 1.0, 0.9, SHAPE, frame=58) is None
    # A newcomer not seen again is forgotten.
    assert entries.refusal(faded, 214.0, 152.0, 1.0, 0.9, SHAPE, frame=59 + FORGET_FRAMES) is None
    assert len(entries) == 0


def test_a_particle_that_left_through_an_edge_comes_back_through_it() -> None:
    entries = EdgeEntries()
    left = _lost_disc(6.0, 120.0)  # lost cut by the left edge
    assert cutting_edges(2.0, 130.0, 12.0, SHAPE) == ["left"]
    assert entries.refusal(left, 2.0, 130.0, 0.6, 0.9, SHAPE, frame=40) is None
    # ... but not through the opposite edge.
    assert entries.refusal(left, 252.0, 130.0, 0.6, 0.9, SHAPE, frame=41) == ENTERED
    assert len(entries) == 1


def test_an_entering_sphere_does_not_take_the_faded_rods_id() -> None:
    from tools.bench.benchmarks.discovery_entry import entering_clip

    clip = entering_clip("fade-edge-artifact", 0, 120, "monet", 30, 40)
    rod, sphere = clip.scenario.prompted
    prompts = [p for p in clip.prompts("point") if p.particle == rod]
    truth = clip.truth.set_index(["frame", "particle"])
    segmenter = EmbeddedSegmenter()
    on_sphere = on_rod = 0
    for i, pixels in enumerate(clip.frames):
        masks, refused = track_with_retries(segmenter, Frame("entry", i, 0.0, pixels), prompts if i == 0 else [])
        assert not refused
        for mask in masks:
            if not mask.present or mask.crop is None or mask.bbox is None:
                continue
            ys, xs = np.nonzero(mask.crop)
            x, y = xs.mean() + mask.bbox[0], ys.mean() + mask.bbox[1]
            rod_at, sphere_at = truth.loc[(i, rod)], truth.loc[(i, sphere)]
            if not math.isnan(sphere_at.x) and math.dist((x, y), (sphere_at.x, sphere_at.y)) < 15:
                on_sphere += 1
            if rod_at.state == "visible" and math.dist((x, y), (rod_at.x, rod_at.y)) < 10:
                on_rod += 1
    assert on_sphere == 0  # was 68 frames, from ~52 to the end
    assert on_rod >= 80  # of 86 visible frames: the rod is found again when it comes back (was 41)
