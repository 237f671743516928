"""Particle identities are the service's: it allocates them, and never hands one out twice in a run.

Clients that add a particle may name its id (the id is then noted as used) or ask the service for one
(`ParticleIds.allocate`: one above every id seen so far in the run, so an id that was tracked, removed,
refused or merely requested is never handed out again). Thread-safe: the control channel, hooks and the
worker (discovery in auto mode) allocate concurrently.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


class ParticleIds:
    """The run's particle-id allocator (ids >= 1)."""

    def __init__(self, used: Iterable[int] = ()) -> None:
        self._lock = threading.Lock()
        # ids a client chose itself (prompted at start or noted since), in order (a dict: an ordered set)
        self._named: dict[int, None] = dict.fromkeys(int(pid) for pid in used)
        self._highest = max(self._named, default=0)
        self._allocated: list[int] = []

    def allocate(self) -> int:
        """A new id, never used nor handed out before in this run."""
        with self._lock:
            self._highest += 1
            self._allocated.append(self._highest)
            return self._highest

    def note(self, particle: int) -> None:
        """Record an id a client chose itself, so that `allocate` never hands it out."""
        with self._lock:
            self._highest = max(self._highest, int(particle))
            self._named.setdefault(int(particle), None)

    @property
    def allocated(self) -> tuple[int, ...]:
        """Ids handed out by `allocate`, in order (a copy)."""
        with self._lock:
            return tuple(self._allocated)

    @property
    def named(self) -> tuple[int, ...]:
        """Ids a client named itself (in the start-up prompts, or noted since), in order (a copy).

        Discovery reads them to know which prompts may not have landed yet (`Discovery` holds its auto-adds
        while one has not: the candidate it sees may be that particle).
        """
        with self._lock:
            return tuple(self._named)
