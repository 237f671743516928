"""What comes in through the frame's edge is a newcomer, not a particle lost elsewhere (issues 16 and 21).

A lost particle's motion budget grows with the frames it has been lost, and appearance does not tell a
rod from a sphere: a rod that faded inside the field had its id put on a sphere entering through the far
edge 185 px away (discovery-entry, fade-edge-artifact: lost 10 frames, budget 58 px, 3.1 budgets; z 0.92
of the rod's typical, contrast 1.08x), and the same in leave-field with the rod out through the other edge.
The newcomer is discovery's to propose; a lost particle stays lost. Two rules, applied to a lost particle's
candidate only (the per-frame path of a present particle never reaches them):

- an **entry** (a match cut by the frame's edge) carries a lost particle's id only if the particle was
  lost at that edge: its last accepted position within its radius plus `PLAUSIBLE_JUMP` of its own step
  scale (not widened by the frames lost) of the edge that cuts the match. A particle that left through an
  edge comes back through it; one that faded inside the field does not appear cut by an edge;
- a refused entry is remembered (`EdgeEntries`) and followed while lost particles' searches keep finding
  it: wholly inside the field a few frames later, it is still the newcomer (`NEWCOMER`). An entry not seen
  for `FORGET_FRAMES` frames is forgotten.

An **exit** is the other side (`exit_refusal`, a present particle's match): a particle leaving through the edge
keeps less and less of its mask in the frame, and the masked match, normalised by that part, finds a noise
patch along the edge about as well. The presence hysteresis (`tracker.PRESENCE_HOLD`, `Z_HOLD`), meant to
keep a faint particle through one noisy frame, then held a rod that had wholly left for one frame more
(robustness `stage-drift`/sim seed 0 frame 30: 7.7 % of its mask in the frame, z 4.86 against the 6 to
appear, reported 16 px along the edge). A match with less than `EXIT_IN_FRAME` of its mask in the frame
carries the id only on the thresholds a particle appears on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.segment.embedded.identity import PLAUSIBLE_JUMP

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.search import PoseEstimate
    from sam4em_live.segment.embedded.tracker import TrackedParticle

#: The identity gate's refusals of a lost particle's candidate (`vetting.match_refusal`).
ENTERED = "came in through the frame's edge away from where it was lost"
NEWCOMER = "a newcomer that came in through the frame's edge"
#: How far (px per frame since it was last seen, plus its radius) a remembered newcomer may have moved, counted
#: over at most `REACH_FRAMES` frames (a lost particle's full-frame search comes round every 4-8 frames).
NEWCOMER_SPEED_PX, REACH_FRAMES = 6.0, 10
#: A remembered newcomer not seen again for this many frames is forgotten.
FORGET_FRAMES = 50
#: The identity gate's refusal of a leaving particle's last sliver (`exit_refusal`).
EXITED = "left through the frame's edge: its sliver in the frame is held only by the presence hysteresis"
#: A present particle's match with less than this fraction of its mask inside the frame is not held by the
#: presence hysteresis (the robustness benchmark scores a particle from 30 % of its footprint in the field).
EXIT_IN_FRAME = 0.3


@dataclass
class Entry:
    """A newcomer where it was last seen (frame pixels) and when (the segmenter's frame count)."""

    x: float
    y: float
    radius_px: float
    frame: int


def cutting_edges(x: float, y: float, radius_px: float, shape: tuple[int, ...]) -> list[str]:
    """The frame's edges a particle of ``radius_px`` at (x, y) crosses ("left", "right", "top", "bottom")."""
    rows, cols = shape[0], shape[1]
    edges = []
    if x - radius_px < 0:
        edges.append("left")
    if x + radius_px > cols - 1:
        edges.append("right")
    if y - radius_px < 0:
        edges.append("top")
    if y + radius_px > rows - 1:
        edges.append("bottom")
    return edges


def distance_to_edge(x: float, y: float, edge: str, shape: tuple[int, ...]) -> float:
    """Distance (px) from (x, y) to one of the frame's edges."""
    rows, cols = shape[0], shape[1]
    return {"left": x, "right": cols - 1 - x, "top": y, "bottom": rows - 1 - y}[edge]


def lost_at(track: TrackedParticle, edges: list[str], shape: tuple[int, ...]) -> bool:
    """Whether ``track`` was lost at one of ``edges`` (see the module docstring)."""
    reach = track.memory.radius_px + PLAUSIBLE_JUMP * track.steps.scale_px(track.memory.radius_px)
    return any(distance_to_edge(track.x, track.y, edge, shape) <= reach for edge in edges)


class EdgeEntries:
    """Newcomers refused to lost particles, followed while they are seen (see the module docstring)."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def refusal(self, track: TrackedParticle, x: float, y: float, in_frame: float, cut_visible: float,
                shape: tuple[int, ...], frame: int) -> str | None:
        """Why a lost particle's candidate at (x, y) is a newcomer (None: it is not known as one).

        ``in_frame``: the candidate's fraction inside the frame; below ``cut_visible`` it is an entry.
        """
        self._entries = [e for e in self._entries if frame - e.frame <= FORGET_FRAMES]
        radius = track.memory.radius_px
        known = self._near(x, y, frame)
        if known is not None:
            known.x, known.y, known.frame = x, y, frame  # followed: seen here now
            return NEWCOMER
        if in_frame < cut_visible:
            edges = cutting_edges(x, y, radius, shape)
            if edges and not lost_at(track, edges, shape):
                self._entries.append(Entry(x, y, radius, frame))
                return ENTERED
        return None

    def _near(self, x: float, y: float, frame: int) -> Entry | None:
        for entry in self._entries:
            reach = entry.radius_px + NEWCOMER_SPEED_PX * min(max(frame - entry.frame, 1), REACH_FRAMES)
            if math.hypot(x - entry.x, y - entry.y) <= reach:
                return entry
        return None


def exit_refusal(track: TrackedParticle, estimate: PoseEstimate, placed: Placement, options: EmbeddedOptions
                 ) -> str | None:
    """Why a present particle's match, mostly outside the frame, no longer carries its id (None: it may).

    Refused when less than `EXIT_IN_FRAME` of the placed mask is inside the frame and the match is below
    the thresholds a particle appears on (`options.min_detection_z`, `options.presence_fraction` of its
    contrast): it passed `TrackedParticle.is_detection` only on the hysteresis (module docstring).
    """
    if not track.present or (estimate.z >= options.min_detection_z
                             and estimate.amplitude >= options.presence_fraction * track.amplitude_ref):
        return None  # (first: the usual case, no pixel counted)
    if np.count_nonzero(placed.crop) >= EXIT_IN_FRAME * max(placed.area_px, 1):
        return None
    return EXITED
