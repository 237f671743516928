"""A young memory's first observations, re-divided as the background map under them is learned.

Where the stream has structure (`background.FlatField` active), each frame is divided by the map before
a particle's appearance is learned. Under a prompted particle the first frame's map is only an
interpolation from around it (1/f texture: 2-4 % rms under a 30-60 px particle, against a 5 % particle),
and the map learns those blocks once the particle has moved off them -- by then the young memory (a
running mean of its first `memory_frames` observations) has learned the interpolation's error, which
stays in its mask for the whole clip (foreign-noise: the truth under the particles on frames 0-9 alone
was worth most of the gap to clean, docs/benchmarks.md "Background model: foreign-noise").

The error is known afterwards: an observation divided by the map m at the time holds
d = p (1 - I / (m b)) (`window.frame_window`, p the polarity, b the window's level); divided by a later
map m' it would hold d' = d + (p - d) (1 - m / m'). The memory is linear in its observations (a weighted
running mean, `ShapeMemory.update`), so each recorded observation's share in the memory and in its half is
followed, and when the map has changed the memory gets share x (p - d)(1 - m / m') for each, with the
observation's plane removed as `ShapeMemory.observe` removes it. Only the pose, the map the observation was
divided by (the state's block grid: kept by reference, `MapState` is replaced whole) and two shares are
kept: no pixels. The correction is made only under the particle (its mask grown by the withholding
margin, `rebase`), and only before a shape refresh (`before_learn`). A stream passed through untouched (no
structure) records nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sam4em_live.segment.embedded.body_frame import body_offsets
from sam4em_live.segment.embedded.morphology import dilate_cross
from sam4em_live.segment.embedded.withholding import WITHHOLD_MARGIN_PX

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.background import MapState

#: The seed and this many first observations are recorded (the map is an interpolation under the prompt
#: until the particle has moved off its first place: 10-30 frames on foreign-noise). 16 / 40 on foreign-noise
#: seeds 0 1 (before the correction was kept under the particle): sim 92.1 / 92.2, MoNet 93.5 / 93.7 J&F.
RECORDED_OBSERVATIONS = 40
#: ... and re-divided while the memory has at most this many observations (after that their shares have
#: faded and the map under them has long been learned).
REBASE_UNTIL_OBSERVATIONS = 80
#: A recorded observation whose share in the memory and both halves has fallen below this is dropped.
MIN_SHARE = 1e-3


class ShapeMemory(Protocol):
    """What a rebase reads and corrects of a memory (`shape.ShapeMemory`, which owns one `EarlyObservations`)."""

    n_obs: int
    half: int
    mask: np.ndarray
    appearance: np.ndarray

    def remove_plane(self, body: np.ndarray) -> np.ndarray: ...

    def correct(self, memory: np.ndarray, halves: np.ndarray) -> None: ...


@dataclass
class Recorded:
    """One observation: its pose (frame px, degrees), the body offset the memory moved by since, its shares."""

    x: float
    y: float
    angle_deg: float
    offset_u: float
    offset_v: float
    divided_by: np.ndarray  # the map's blocks (relative background) the observation was divided by
    share: float  # its weight in the memory ...
    half_shares: list[float]  # ... and in each half


class EarlyObservations:
    """The recorded observations of one memory (`ShapeMemory.early`) and their re-division (`rebase`)."""

    def __init__(self) -> None:
        self.entries: list[Recorded] = []
        self._pending: Recorded | None = None
        self._closed = False  # recording stopped (memory old, or the map was not active when it began)

    def before_learn(self, memory: ShapeMemory, state: MapState | None, x: float, y: float, angle_deg: float,
                     polarity: float, refreshing: bool) -> None:
        """Before a learn at (x, y, angle) on ``state``'s map: note it (re-dividing the recorded ones if it refreshes).

        The refresh is the only step that reads the memory; the corrections are linear, so made late with the
        shares of the time they add up to the same (a rebase: ~0.05 ms per recorded observation, 81² grid).
        """
        if refreshing:
            self.rebase(memory, state, polarity)
        self.note(memory, state, x, y, angle_deg)

    def note(self, memory: ShapeMemory, state: MapState | None, x: float, y: float, angle_deg: float) -> None:
        """Before a learn: the observation about to be folded in is seen at (x, y, angle) on ``state``'s map.

        The first call also records the seed (the memory's first observation, seen on the prompt
        frame's map: taken as the map now, at this pose). Nothing is recorded once `RECORDED_OBSERVATIONS`
        are, or when no map divides the frames.
        """
        self._pending = None
        if self._closed:
            return
        if state is None or not state.active or memory.n_obs > RECORDED_OBSERVATIONS:
            # Closed for good once old enough, or when the seed's map did not divide (a flat stream).
            self._closed = memory.n_obs > RECORDED_OBSERVATIONS or not self.entries
            return
        if memory.n_obs == 1 and not self.entries:  # the seed: all of the memory and of both halves
            self.entries.append(Recorded(x, y, angle_deg, 0.0, 0.0, state.relative, 1.0, [1.0, 1.0]))
        self._pending = Recorded(x, y, angle_deg, 0.0, 0.0, state.relative, 0.0, [0.0, 0.0])

    def fold(self, share: float, half: int, half_share: float) -> None:
        """`ShapeMemory.update` folded an observation in with these shares: the recorded ones fade."""
        keep, keep_half = 1.0 - share, 1.0 - half_share
        for entry in self.entries:
            entry.share *= keep
            entry.half_shares[half] *= keep_half
        if self._pending is not None:
            self._pending.share = share
            self._pending.half_shares[half] = half_share
            self.entries.append(self._pending)
            self._pending = None
        self.entries = [e for e in self.entries if max(e.share, *e.half_shares) >= MIN_SHARE]

    def moved(self, du: float, dv: float) -> None:
        """The memory was re-centred by (du, dv) body px: its old pixel (u + du, v + dv) is now at (u, v)."""
        for entry in self.entries:
            entry.offset_u += du
            entry.offset_v += dv

    def rebase(self, memory: ShapeMemory, state: MapState | None, polarity: float) -> None:
        """Re-divide the recorded observations in the memory by ``state``'s map (see the module doc)."""
        if not self.entries:
            return
        if state is None or not state.active or memory.n_obs > REBASE_UNTIL_OBSERVATIONS:
            self.entries = []
            self._closed = True
            return
        current = state.relative
        # Only under the particle (its mask grown by the withholding margin), where the map learns a block once
        # the particle has left it. Beyond it a change may be the particle itself: the unmasked half of a rod
        # seeded at half its length is learned as background, and divided out of the early observations too
        # it kept the mask from growing (foreign-noise MoNet seed 3: -28 % area to the end, against -5 %).
        size = 2 * memory.half + 1
        u0, v0 = (a.ravel() for a in body_offsets(memory.half))
        # Sum of share x (1 - m / m') over the observations; (p - d) and the plane are common to all (linear).
        shares = np.zeros((3, size * size), np.float32)  # the memory, half 0, half 1
        lost_by_map: dict[int, np.ndarray] = {}  # 1 - m / m' on the block grid, per map divided by (mostly one)
        for entry in self.entries:
            if entry.divided_by is current or entry.divided_by.shape != current.shape:
                continue
            lost_map = lost_by_map.get(id(entry.divided_by))
            if lost_map is None:
                lost_map = (np.float32(1.0) - entry.divided_by / current).ravel()
                lost_by_map[id(entry.divided_by)] = lost_map
            lost = lost_map[_block_index(entry, u0, v0, state.factor, current.shape)]
            for k, share in enumerate((entry.share, *entry.half_shares)):
                if share:
                    shares[k] += np.float32(share) * lost
            entry.divided_by = current
        if not shares.any():
            return
        changes = (shares * (np.float32(polarity) - memory.appearance.ravel())).reshape(3, size, size)
        under = dilate_cross(memory.mask, math.ceil(WITHHOLD_MARGIN_PX))
        for change in changes:
            memory.remove_plane(change)  # as `observe` removes it from the observation
            change[~under] = 0.0
        memory.correct(changes[0], changes[1:])


def _block_index(entry: Recorded, u: np.ndarray, v: np.ndarray, factor: int, grid: tuple[int, ...]) -> np.ndarray:
    """The map's block (flat index) under body points (u, v) of the memory at the entry's pose (as `observe`)."""
    t = math.radians(entry.angle_deg)
    c, s = np.float32(math.cos(t) / factor), np.float32(math.sin(t) / factor)
    u, v = u + np.float32(entry.offset_u), v + np.float32(entry.offset_v)
    cols = u * c
    cols -= v * s
    cols += np.float32(entry.x / factor)
    rows = u * s
    rows += v * c
    rows += np.float32(entry.y / factor)
    index = np.clip(rows, 0, grid[0] - 1).astype(np.intp)
    index *= grid[1]
    index += np.clip(cols, 0, grid[1] - 1).astype(np.intp)
    return index
