"""Edits on their way to the worker: admitted through the quotas on any thread, handed out per frame.

Control clients and hooks submit prompts, corrections and removals from their own threads; the worker
takes, at each frame, the edits anchored to it. Every edit passes `ServiceQuotas` twice: when it is
submitted (a clear refusal to the client at once, against the shape of the frames seen so far) and when
its frame comes (the frame's own shape: a new series may have another one). Refusals on a client's thread
are kept until the next frame reports them as ``prompt_rejected`` events.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from sam4em_live.control_api import QuotaExceeded
from sam4em_live.particles import PromptError
from sam4em_live.service.processor import PromptSchedule

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from sam4em_live.control.quotas import ServiceQuotas
    from sam4em_live.particles import ParticleEdit

#: Refusals kept for the next frame's events; beyond it the oldest are only counted (by the quotas).
MAX_REFUSALS_KEPT = 64


class EditInbox:
    """The prompt schedule behind the quotas (thread-safe submit; `due` on the worker thread only)."""

    def __init__(self, edits: Sequence[ParticleEdit], quotas: ServiceQuotas) -> None:
        self.schedule = PromptSchedule(edits)
        self.quotas = quotas
        self._refused: collections.deque[tuple[ParticleEdit, str]] = collections.deque(maxlen=MAX_REFUSALS_KEPT)

    def submit(self, edit: ParticleEdit, shape: tuple[int, int] | None, tracked: Collection[int]) -> None:
        """Queue ``edit`` (its box clipped) or raise `PromptError` / `QuotaExceeded`; nothing is queued then.

        ``shape`` is the frame shape known so far (None before the first frame), ``tracked`` the particles
        tracked now.
        """
        try:
            admitted = self.quotas.admit_edit(edit, shape, tracked, len(self.schedule))
        except PromptError as exc:
            self._refused.append((edit, str(exc)))
            raise
        except QuotaExceeded as exc:
            # Rate refusals are only counted: an event (and a log line) each would let a flood amplify itself.
            if exc.quota == "max_particles":
                self._refused.append((edit, str(exc)))
            raise
        self.schedule.add(admitted)

    def due(self, frame_index: int, shape: tuple[int, int], tracked: Callable[[], list[int]]
            ) -> tuple[list[ParticleEdit], list[tuple[ParticleEdit, str]]]:
        """The edits to apply on this frame and the (edit, reason) refusals to report with it."""
        due = self.schedule.due(frame_index)
        edits, refused = self.quotas.bound_due(due, shape, tracked()) if due else ([], [])
        while self._refused:
            refused.append(self._refused.popleft())
        return edits, refused
