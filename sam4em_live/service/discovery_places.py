"""Where discovery must not add a particle: the places of the particles tracked now, lost, or about to land.

Discovery never gives a second id to one particle. It keeps out of the last place of every tracked particle
(present, or lost), and of two kinds of particle the segmenter does not track *yet*:

- its own additions (auto mode, or an accepted proposal) until they land (the segmenter tracks them):
  live, a prompt is seeded beside the frame loop and lands a few frames later (`service.seeding`), and
  meanwhile the same place must not be added again by another track;
- a client's prompts (ids a client named, `ParticleIds.named`) that have not landed: their places are not
  known here (only their ids), so auto mode adds nothing while one waits, for at most
  `PENDING_WAIT_FRAMES` (a prompt the segmenter refused never lands). Live, the benchmark's four start-up
  prompts took ~30–60 frames to land, and auto mode added each of them a second time meanwhile.

A particle lost inside the field (not near the border, where it may have left) is remembered for
`REFIND_WINDOW_FRAMES`: a newcomer may be it, found again elsewhere (the caller proposes it instead).
`update` runs on the worker thread; `place_own` may run on any thread (accepting a proposal).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sam4em_live.particles import ParticleMeasurement
    from sam4em_live.service.particle_ids import ParticleIds

#: How long (frames) a particle lost inside the field makes a newcomer in auto mode a proposal, not a particle.
REFIND_WINDOW_FRAMES = 400
#: A particle whose last centre was within its radius plus this of the border left the field: not "lost inside".
EDGE_PX = 8.0
#: Longest (frames) a prompt may wait to land before discovery stops keeping out of it (or waiting for it).
PENDING_WAIT_FRAMES = 200

Place = tuple[float, float, float]  # x, y (column, row) and radius, full-resolution pixels


class TrackedPlaces:
    """The places discovery keeps out of, updated from each frame's measurements."""

    def __init__(self, ids: ParticleIds) -> None:
        self._ids = ids
        self._lock = threading.Lock()  # guards ``_own`` (written by `place_own` from any thread)
        self.known: dict[int, Place] = {}  # particle -> last place seen present (tracked now)
        self.lost_since: dict[int, int] = {}  # particle lost inside the field -> frame it was first missed
        self._own: dict[int, tuple[Place, int | None]] = {}  # discovery's additions -> (place, frame first waited)
        self._own_ids: set[int] = set()  # every id discovery added (never a client's prompt waiting to land)
        self._landed: set[int] = set()  # ids the segmenter has tracked at some point
        self._resolved: set[int] = set()  # ids whose prompt the segmenter refused (guarded by ``_lock``)
        self._waiting_since: dict[int, int] = {}  # a client's prompt not landed -> frame first seen waiting

    def place_own(self, particle: int, place: Place) -> None:
        """Discovery has just submitted ``particle`` at ``place``: keep out of it until it lands."""
        with self._lock:
            self._own[particle] = (place, None)
            self._own_ids.add(particle)

    def refused(self, particle: int) -> None:
        """The segmenter refused ``particle``'s prompt (``prompt_rejected``): it will not land; stop waiting for it.

        A refused addition of discovery's own kept its place out for `PENDING_WAIT_FRAMES` and delayed a
        newcomer passing there by 8 frames (`discovery-entry`, stage-drift).
        """
        with self._lock:
            self._own.pop(particle, None)
            self._resolved.add(particle)

    def update(self, index: int, shape: tuple[int, int], measurements: Mapping[int, ParticleMeasurement],
               tracked: Sequence[int]) -> None:
        """Frame ``index``'s measurements of the particles ``tracked`` now."""
        current = set(tracked)
        self._landed |= current
        for pid in set(self.known) - current:
            del self.known[pid]
        for pid in set(self.lost_since) - current:
            del self.lost_since[pid]
        rows, cols = shape
        for pid in current:
            m = measurements.get(pid)
            if m is not None and m.present:
                self.known[pid] = (m.x, m.y, max(m.major_axis_px / 2, math.sqrt(m.area_px / math.pi), 1.0))
                self.lost_since.pop(pid, None)
            elif pid in self.known and pid not in self.lost_since:
                x, y, r = self.known[pid]
                if min(x, y, cols - 1 - x, rows - 1 - y) > r + EDGE_PX:  # lost inside the field, not gone out
                    self.lost_since[pid] = index
        with self._lock:
            for pid, (place, since) in list(self._own.items()):
                if pid in self._landed or (since is not None and index - since > PENDING_WAIT_FRAMES):
                    del self._own[pid]
                elif since is None:
                    self._own[pid] = (place, index)
            own = self._own_ids | self._resolved
        for pid in self._ids.named:
            if pid not in self._landed and pid not in own:
                self._waiting_since.setdefault(pid, index)
            else:
                self._waiting_since.pop(pid, None)

    def keep_out(self) -> tuple[Place, ...]:
        """Places of the particles tracked now and of discovery's additions not landed yet."""
        with self._lock:
            own = tuple(place for place, _ in self._own.values())
        return (*self.known.values(), *own)

    def prompts_waiting(self, index: int) -> bool:
        """Whether a client's prompt has not landed yet (for at most `PENDING_WAIT_FRAMES`)."""
        return any(index - since <= PENDING_WAIT_FRAMES for since in self._waiting_since.values())

    def lost(self, index: int) -> tuple[int, ...]:
        """Particles lost inside the field within `REFIND_WINDOW_FRAMES`, in id order."""
        return tuple(sorted(pid for pid, since in self.lost_since.items() if index - since <= REFIND_WINDOW_FRAMES))
