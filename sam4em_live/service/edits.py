"""Edits on their way to the worker: admitted through the quotas on any thread, handed out per frame.

Control clients and hooks submit prompts, corrections and removals from their own threads; the worker
takes, at each frame, the edits anchored to it. Every edit passes `ServiceQuotas` twice: when it is
submitted (a clear refusal to the client at once, against the shape of the frames seen so far) and when
its frame comes (the frame's own shape: a new series may have another one). Refusals on a client's thread
are kept until the next frame, which reports them (in the edits log always; as ``prompt_rejected`` events
too, except the quota refusals that only count: `ANNOUNCED_QUOTAS`).

A replay (`add_recorded_refusals`) hands out the refusals of a recorded run at the frames that reported
them: they depended on the moment of submission (rates, the worker's load), which a replay cannot repeat.
"""

from __future__ import annotations

import collections
import re
import threading
from typing import TYPE_CHECKING, NamedTuple

from sam4em_live.control_api import QuotaExceeded
from sam4em_live.particles import PromptError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from sam4em_live.control.quotas import ServiceQuotas
    from sam4em_live.particles import EditRecord, ParticleEdit

#: Refusals kept for the next frame; beyond it the oldest are only counted (by the quotas and `unreported`).
MAX_REFUSALS_KEPT = 64

#: Quota refusals at submission that the next frame also reports as ``prompt_rejected`` events: the others
#: (rates, pending edits, the worker's load) only count, so that a flood of requests cannot amplify itself.
ANNOUNCED_QUOTAS = frozenset({"max_particles"})

# The quota a due-time refusal names: `ServiceQuotas.bound_due` gives the reason text only, and every
# quota message names its key as "(quotas.<key>".
_QUOTA_IN_REASON = re.compile(r"\(quotas\.(\w+)")


class PromptSchedule:
    """Edits waiting for their frame. Thread-safe: the control channel adds, the worker takes.

    An edit anchored to frame ``k`` is applied when the engine processes the
    first frame with index >= k (so a prompt for a frame that was dropped
    still lands, on the next frame the engine really sees); ``frame=None``
    means the next frame processed. Applied edits are re-anchored to the
    engine's actual frame index.
    """

    def __init__(self, edits: Sequence[ParticleEdit] = ()) -> None:
        self._lock = threading.Lock()
        self._pending: list[ParticleEdit] = list(edits)

    def add(self, edit: ParticleEdit) -> None:
        with self._lock:
            self._pending.append(edit)

    def due(self, frame_index: int) -> list[ParticleEdit]:
        with self._lock:
            ready = [e for e in self._pending if e.frame is None or e.frame <= frame_index]
            if not ready:
                return []
            self._pending = [e for e in self._pending if not (e.frame is None or e.frame <= frame_index)]
        return [e.at_frame(frame_index) for e in ready]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class Refusal(NamedTuple):
    """An edit refused before it reached the segmenter.

    ``checked`` is ``submit`` (on the client's thread) or ``due`` (when its frame came); ``quota`` names
    the quota that refused it (None: the edit cannot apply, a `PromptError`); ``announce`` whether the
    frame reports it as a ``prompt_rejected`` event as well as in the edits log.
    """

    edit: ParticleEdit
    reason: str
    checked: str
    quota: str | None = None
    announce: bool = True


class EditInbox:
    """The prompt schedule behind the quotas (thread-safe submit; `due` on the worker thread only)."""

    def __init__(self, edits: Sequence[ParticleEdit], quotas: ServiceQuotas) -> None:
        self.schedule = PromptSchedule(edits)
        self.quotas = quotas
        self._refused: collections.deque[Refusal] = collections.deque()
        self._recorded: list[Refusal] = []  # a replay's refusals, by frame (worker thread only)
        self._recorded_frames: list[int] = []
        #: Refusals not reported because more than `MAX_REFUSALS_KEPT` came between two frames.
        self.unreported = 0

    def submit(self, edit: ParticleEdit, shape: tuple[int, int] | None, tracked: Collection[int],
               placed: Sequence[tuple[int, tuple[int, int, int, int]]] = ()) -> None:
        """Queue ``edit`` (its box clipped) or raise `PromptError` / `QuotaExceeded`; nothing is queued then.

        ``shape`` is the frame shape known so far (None before the first frame), ``tracked`` the particles
        tracked now, ``placed`` (particle, bbox) of those present on the last frame (`ServiceQuotas.admit_edit`).
        """
        try:
            admitted = self.quotas.admit_edit(edit, shape, tracked, len(self.schedule), placed)
        except PromptError as exc:
            self._keep(Refusal(edit, str(exc), "submit"))
            raise
        except QuotaExceeded as exc:
            self._keep(Refusal(edit, str(exc), "submit", exc.quota, announce=exc.quota in ANNOUNCED_QUOTAS))
            raise
        self.schedule.add(admitted)

    def _keep(self, refusal: Refusal) -> None:
        # deque.append is atomic; the length check may race by one, which only moves the bound by one.
        if len(self._refused) >= MAX_REFUSALS_KEPT:
            self._refused.popleft()
            self.unreported += 1
        self._refused.append(refusal)

    def add_recorded_refusals(self, records: Sequence[EditRecord]) -> None:
        """Report these recorded refusals again, each at the first frame >= its own (replay; before `due`)."""
        for record in sorted(records, key=lambda r: r.frame):
            self._recorded.append(Refusal(record.edit, record.reason or "", record.checked, record.quota,
                                          announce=_announced(record)))
            self._recorded_frames.append(record.frame)

    def due(self, frame_index: int, shape: tuple[int, int], tracked: Callable[[], list[int]]
            ) -> tuple[list[ParticleEdit], list[Refusal]]:
        """The edits to apply on this frame and the refusals to report with it (earliest first)."""
        refused: list[Refusal] = []
        while self._recorded_frames and self._recorded_frames[0] <= frame_index:
            self._recorded_frames.pop(0)
            refused.append(self._recorded.pop(0))
        while self._refused:
            refused.append(self._refused.popleft())
        due = self.schedule.due(frame_index)
        if not due:
            return [], refused
        edits, bounded_out = self.quotas.bound_due(due, shape, tracked())
        for edit, reason in bounded_out:
            quota = _QUOTA_IN_REASON.search(reason)
            refused.append(Refusal(edit, reason, "due", quota.group(1) if quota else None))
        return edits, refused


def _announced(record: EditRecord) -> bool:
    """Whether the live run reported this refusal as a ``prompt_rejected`` event too (see `Refusal`)."""
    return record.checked != "submit" or record.quota is None or record.quota in ANNOUNCED_QUOTAS
