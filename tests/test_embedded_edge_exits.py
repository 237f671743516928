"""A particle leaving through the frame's edge is not reported a frame late (`edge_entries.exit_refusal`; issue 16).

End to end: robustness `stage-drift`/sim seed 0, where the rod leaves through the left edge at frame 29-30.
Before the rule its last sliver (7.7 % of its mask in the frame, z 4.86 against the 6 to appear) passed on
the presence hysteresis alone and the rod was reported at x = 2.2 on frame 30, after it had wholly left:
the cell's one false-presence frame (1 of 51). Rule on its own: a real `TrackedParticle` at the edge.
"""

from __future__ import annotations

import numpy as np

from sam4em_live.segment.embedded.edge_entries import EXIT_IN_FRAME, EXITED, exit_refusal
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.raster import PixelBox, Placement
from sam4em_live.segment.embedded.search import PoseEstimate
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.segment.embedded.tracker import TrackedParticle

OPTIONS = EmbeddedOptions()


def _disc_at_left_edge() -> TrackedParticle:
    """A present disc of radius 12 at (3, 120), contrast 0.08, typical z 30."""
    rows, cols = np.indices((41, 41))
    mask = (rows - 20) ** 2 + (cols - 20) ** 2 <= 144
    return TrackedParticle(1, ShapeMemory(mask.astype(np.float32), mask, OPTIONS), 1.0, 3.0, 120.0, 0.0,
                           amplitude_ref=0.08, z_ref=30.0)


def _placed(in_frame: float, area: int = 450) -> Placement:
    """A placement with ``in_frame`` of its ``area`` px inside the frame (at the left edge)."""
    inside = int(round(in_frame * area))
    crop = np.zeros((25, 25), bool)
    crop.ravel()[:inside] = True
    return Placement(PixelBox(0, 108, 25, 133), crop, area)


def test_a_leaving_particles_last_sliver_is_not_held_by_the_hysteresis() -> None:
    track = _disc_at_left_edge()
    held_only = PoseEstimate(-8.0, 121.0, 0.0, 0.7 * OPTIONS.min_detection_z + 0.5, 0.5 * 0.08)
    assert exit_refusal(track, held_only, _placed(0.08), OPTIONS) == EXITED
    # Clear evidence on the sliver (the thresholds a particle appears on): still the particle.
    clear = PoseEstimate(-8.0, 121.0, 0.0, OPTIONS.min_detection_z + 0.5, 0.5 * 0.08)
    assert exit_refusal(track, clear, _placed(0.08), OPTIONS) is None
    faint = PoseEstimate(-8.0, 121.0, 0.0, OPTIONS.min_detection_z + 0.5, 0.3 * 0.08)
    assert exit_refusal(track, faint, _placed(0.08), OPTIONS) == EXITED
    # Enough of it in the frame: the hysteresis keeps a faint particle through a noisy frame, as everywhere.
    assert exit_refusal(track, held_only, _placed(EXIT_IN_FRAME + 0.05), OPTIONS) is None
    # A lost particle is judged by the entry rules and the strict thresholds, not this one.
    track.lose()
    assert exit_refusal(track, held_only, _placed(0.08), OPTIONS) is None


def test_the_stage_drift_rod_is_absent_once_it_has_left() -> None:
    from sam4em_live.evaluate.identity import score_tracks
    from sam4em_live.sim.conditions import get_condition
    from sam4em_live.sim.scenario import render_scenario
    from tools.bench.benchmarks.robustness import track_clip

    clip = render_scenario(get_condition("stage-drift").build(0, 100, "sim"), 0)
    _, table, _, refused = track_clip(clip, "embedded", {}, "point")
    assert refused == 0
    figures = score_tracks(clip.truth, table)
    assert figures.false_presence_frames == 0
    assert figures.hops == 0
    assert figures.missed_frames == 0
    rod = table[(table["particle"] == 1) & (table["frame"] == 30)]
    assert not bool(rod["present"].iloc[0])
