"""Prompts seeded beside the frame loop (live mode): a click never stalls the stream (issue 23).

Seeding a prompt (finding the particle under the click, its outline, its first template) costs
~15-30 ms a particle on the 2-core machine, 100+ ms for a handful prompted at once: on the worker
thread that is 20+ frames of a 200 fps camera, dropped in ``latest`` mode. `SeedingLane` moves it to a
helper thread. A frame's due edits that hold a prompt become a *batch*: the helper seeds its prompts
on that frame's pixels (`SeedsAside.seed`, which reads no tracking state) while the worker goes on
tracking the particles it has; on the first frame after the batch is seeded, its edits are handed to
the backend with the seeds (``track(frame, edits, seeded=...)``), which brings each new particle from
its seeded position up to that frame. Edits that come due while a batch is seeded wait for it and keep
their order (a removal of a particle still being seeded lands after it); the next batch starts on the
frame the previous one lands on.

Only live runs use it (``latest`` backpressure, a backend in process that can seed aside): when a
prompt lands depends on timing. Every-frame and offline runs seed on the prompt's own frame, on the
worker, as before, so their results do not change. A batch that lands on the frame it was seeded on
gives exactly what seeding there would (tests/test_seeding_aside.py).

The edits log records a batch's edits at the frame they landed on (``EditRecord.frame``, the edit
anchored there), which is when they took effect; a prompt the backend cannot seed is reported there
as ``prompt_rejected`` naming its particle, as on the synchronous path.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, NamedTuple

from sam4em_live.particles import Prompt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.frames import Frame
    from sam4em_live.particles import ParticleEdit
    from sam4em_live.segment.base import SeededEdits, SeedsAside

log = logging.getLogger(__name__)

#: Longest wait for the helper thread to finish its batch when the run ends (seconds).
CLOSE_TIMEOUT_S = 5.0


class Landing(NamedTuple):
    """What the worker hands the backend on a frame: ``edits`` and, when a batch lands, its seeds.

    ``seeded`` is None when none of ``edits`` was seeded aside: the backend seeds any prompt among them
    itself (a batch whose seeding raised lands so, and its errors follow the usual `PromptError` contract).
    ``seeded.rejected`` are the batch's prompts the backend could not seed, to report on this frame.
    """

    edits: list[ParticleEdit]
    seeded: SeededEdits | None


class _Batch(NamedTuple):
    frame: Frame
    edits: tuple[ParticleEdit, ...]


class _Done(NamedTuple):
    batch: _Batch
    seeded: SeededEdits | None  # None: seeding raised (logged); the edits land unseeded


class SeedingLane:
    """Routes each live frame's edits: prompts through a helper thread, everything else in order.

    `route` and `close` are called from the worker thread only; the helper thread only calls
    ``seeder.seed``. At most one batch is being seeded at a time.
    """

    def __init__(self, seeder: SeedsAside) -> None:
        self._seeder = seeder
        self._jobs: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._in_flight: _Batch | None = None
        self._held: list[ParticleEdit] = []  # came due while a batch was seeded (worker thread only)
        #: Batches seeded aside so far, and the frames between each batch's frame and its landing (for status).
        self.batches = 0
        self.last_delay_frames = 0

    @property
    def busy(self) -> bool:
        """Whether a batch is being seeded, or edits wait for one."""
        return self._in_flight is not None or bool(self._held)

    def route(self, frame: Frame, due: Sequence[ParticleEdit]) -> Landing:
        """The edits to hand the backend with ``frame`` (validated ``due`` edits in, in order)."""
        landed: SeededEdits | None = None
        unseeded: list[ParticleEdit] = []
        if self._in_flight is not None:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                self._held.extend(due)
                return Landing([], None)
            self._in_flight = None
            self.last_delay_frames = frame.index - done.batch.frame.index
            if done.seeded is None:
                unseeded = [edit.at_frame(frame.index) for edit in done.batch.edits]
            else:
                landed = done.seeded
        waiting = [*self._held, *due]
        self._held = []
        now = unseeded if landed is None else [edit.at_frame(frame.index) for edit in landed.edits]
        if any(isinstance(edit, Prompt) for edit in waiting):
            self._start(_Batch(frame, tuple(edit.at_frame(frame.index) for edit in waiting)))
        else:  # anchored where they take effect (those held for a batch came due on an earlier frame)
            now.extend(edit.at_frame(frame.index) for edit in waiting)
        return Landing(now, landed)

    def _start(self, batch: _Batch) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._seed_batches, name="sam4em-seeding", daemon=True)
            self._thread.start()
        self._in_flight = batch
        self.batches += 1
        self._jobs.put(batch)

    def _seed_batches(self) -> None:
        while True:
            batch = self._jobs.get()
            if batch is None:
                return
            try:
                seeded: SeededEdits | None = self._seeder.seed(batch.frame, batch.edits)
            except Exception:
                log.exception("seeding %d edits of frame %d aside failed; they are seeded on the frame they land on",
                              len(batch.edits), batch.frame.index)
                seeded = None
            self._done.put(_Done(batch, seeded))

    def close(self) -> None:
        """Stop the helper thread (a batch it is seeding is finished first, then dropped with the run)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(CLOSE_TIMEOUT_S)
            self._thread = None
