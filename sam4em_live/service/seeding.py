"""Prompts seeded beside the frame loop (live mode): a click never stalls the stream (issue 23).

Seeding a prompt (finding the particle under the click, its outline, its first template) costs
~15-30 ms a particle on the 2-core machine, 100+ ms for a handful prompted at once: on the worker
thread that is 20+ frames of a 200 fps camera, dropped in ``latest`` mode. `SeedingLane` moves it to a
helper thread. A frame's due edits that hold a prompt become a *batch*, cut into one *chunk* per prompt
(`chunks`); the helper seeds the chunks one after another on that frame's pixels (`SeedsAside.seed`,
which reads no tracking state) while the worker goes on tracking the particles it has. The seeded
batch is handed to the backend on a later frame (``track(frame, edits, seeded=...)``), which brings
each new particle from its seeded position up to that frame.

Three things keep the worker at full speed (measured in docs/benchmarks.md, "End to end"):

- **Seeding only while the worker is idle.** Seeding is mostly Python: while it runs, the worker gets
  the interpreter about half the time (the GIL) and its frames take twice as long. A prompt's seeding
  (~20-50 ms of CPU) run whole beside a 200 fps stream (5 ms a frame) put the worker 10+ frames behind
  and dropped frames (issue 23: 12 for one particle added mid-stream). So the helper seeds only while
  the worker has finished its frame and handed the result on with no frame waiting (the service's
  `WorkerIdle`, which the discovery detector waits on too): a trace hook on the helper thread
  (`_pause_while_worker_busy`, called at each of its Python function calls) waits while the worker holds
  a frame, so the worker loses at most one GIL switch interval a frame. Why a hook and not explicit pause
  points between the seeding's stages, as the detector has (`StagePauses`): side by side on the loaded VM the
  two lost the same frames within its scatter, but points at the seeding's ~15 stage functions leave up to
  28 ms of one 1024² prompt's seeding without a pause (p90 17 ms) against 12 ms with the hook (a numpy call),
  2-5 frames of a 200 fps camera that the loaded VM cannot resolve, and they would need a pause callback
  through the `SeedsAside` protocol and eight modules of the embedded seeding (docs/benchmarks.md, "A click
  at 200 fps"). A worker that never catches up still gets the prompt seeded: after waiting `MAX_YIELD_S` the
  helper runs `FORCED_SLICE_S` regardless, and after `SEEDING_PATIENCE_S` on one batch it no longer
  pauses (the prompt's mask would otherwise come seconds late on a worker that is seldom idle).
- **Landing when the worker can take it.** A new particle's first ~40 frames cost several times its
  steady state (its memory fills): a batch landed while frames wait kept the worker behind, and a
  worker that skips frames sees its particles move further between frames and searches more (measured:
  +25-40 % a frame). A seeded batch therefore lands on a frame with no frame waiting behind it (at most
  `MAX_LANDING_WAIT_FRAMES` later). A batch's particles land together: started on successive frames,
  the embedded backend lost each new particle of a dense field on the next one's frame (reported).
- **One BLAS thread** (`segment.blas_threads`, set by the stage): the seeding's fits went through
  OpenBLAS's own threads, which wait for a core that the worker and ZeroMQ hold.

Edits that come due while a batch is seeded wait for all of it and keep their order (a removal of a
particle still being seeded lands after it); the next batch starts on the frame the previous one lands on.

Only live runs use it (``latest`` backpressure, a backend in process that can seed aside): when a
prompt lands depends on timing. Every-frame and offline runs seed on the prompt's own frame, on the
worker, as before, so their results do not change. A batch that lands on the frame it was seeded on
gives exactly what seeding there would (tests/test_seeding_aside.py). An accepted discovery proposal
is a prompt like a click and takes the same lane.

The edits log records a batch's edits at the frame they landed on (``EditRecord.frame``, the edit
anchored there), which is when they took effect; a prompt the backend cannot seed is reported there
as ``prompt_rejected`` naming its particle, as on the synchronous path.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Literal, NamedTuple

from sam4em_live.particles import Prompt
from sam4em_live.segment.base import RejectedEdit, SeededEdits

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from _typeshed import TraceFunction

    from sam4em_live.frames import Frame
    from sam4em_live.particles import ParticleEdit
    from sam4em_live.segment.base import SeedsAside
    from sam4em_live.service.worker_idle import WorkerIdle

log = logging.getLogger(__name__)

TraceEvent = Literal["call", "line", "return", "exception", "opcode"]  # what `sys.settrace`'s hook is told

#: Longest wait for the helper thread to finish its chunk when the run ends (seconds).
CLOSE_TIMEOUT_S = 5.0
#: Longest the helper waits for the worker to catch up before it seeds its next prompt anyway (seconds):
#: a worker that never catches up (a camera faster than the service) still gets its prompts, later.
MAX_YIELD_S = 0.1
#: After waiting `MAX_YIELD_S` for a worker that stays behind, the helper seeds this long before it checks again.
FORCED_SLICE_S = 0.02
#: A batch seeded only in the worker's idle moments for this long is then seeded on regardless (sharing the
#: interpreter, as before this lane paused): a worker that is seldom idle still gets it within about this
#: long plus the seeding (seconds; at 200 fps, 100 frames).
SEEDING_PATIENCE_S = 0.5
#: Longest a seeded prompt waits for a frame with no backlog before it lands anyway (frames).
MAX_LANDING_WAIT_FRAMES = 25


class Landing(NamedTuple):
    """What the worker hands the backend on a frame: ``edits`` and, when a batch lands, its seeds.

    ``seeded`` is None when none of ``edits`` was seeded aside: the backend seeds any prompt among them
    itself (a batch whose seeding raised lands so, and its errors follow the usual `PromptError` contract).
    ``seeded.rejected`` are the batch's prompts the backend could not seed, to report on this frame.
    """

    edits: list[ParticleEdit]
    seeded: SeededEdits | None


class _Chunk(NamedTuple):
    """What the helper seeds in one go: a frame's edits up to and including one prompt.

    The last chunk of a batch also holds the edits after its prompt.
    """

    frame: Frame
    edits: tuple[ParticleEdit, ...]


class _Done(NamedTuple):
    chunk: _Chunk
    seeded: SeededEdits | None  # None: seeding raised (logged); the edits land unseeded


def merged(parts: Sequence[_Done]) -> tuple[list[ParticleEdit], SeededEdits | None]:
    """A batch's seeded chunks as one landing: (its edits in order, their seeds; None if none seeded).

    A chunk whose seeding raised keeps its edits, unseeded: the backend seeds them when they land.
    """
    edits: list[ParticleEdit] = []
    rejected: list[RejectedEdit] = []
    prepared: dict[tuple[object, ...], object] = {}
    seeded = [part.seeded for part in parts if part.seeded is not None]
    for part in parts:
        edits.extend(part.chunk.edits if part.seeded is None else part.seeded.edits)
    for one in seeded:
        rejected.extend(one.rejected)
        prepared.update(one.prepared)
    if not seeded:
        return edits, None
    return edits, SeededEdits(seeded[0].frame_index, tuple(edits), tuple(rejected), prepared)


def chunks(edits: Sequence[ParticleEdit]) -> list[tuple[ParticleEdit, ...]]:
    """``edits`` cut after each prompt (edits after the last prompt go with it); order kept."""
    cut: list[tuple[ParticleEdit, ...]] = []
    current: list[ParticleEdit] = []
    for edit in edits:
        current.append(edit)
        if isinstance(edit, Prompt):
            cut.append(tuple(current))
            current = []
    if current:
        if cut:
            cut[-1] = (*cut[-1], *current)
        else:
            cut.append(tuple(current))
    return cut


class SeedingLane:
    """Routes each live frame's edits: prompts through a helper thread, everything else in order.

    `route` and `close` are called from the worker thread only; the helper thread only calls ``seeder.seed``.
    At most one batch is being seeded at a time, one prompt (chunk) after another. The helper pauses while
    ``worker`` (the service's `WorkerIdle`) says the worker holds a frame; without one it never pauses.
    """

    def __init__(self, seeder: SeedsAside, worker: WorkerIdle | None = None) -> None:
        self._seeder = seeder
        self._worker = worker
        self._jobs: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._in_flight = 0  # chunks of the current batch not landed yet (worker thread only)
        self._held: list[ParticleEdit] = []  # came due while a batch was seeded (worker thread only)
        self._held_since: Frame | None = None  # the frame the first of them came due on (their pixels)
        self._closing = False  # set by `close`: the helper no longer pauses
        self._parts: list[_Done] = []  # the batch's chunks seeded so far, in order (worker thread only)
        self._ready_since: int | None = None  # the frame the whole batch was first seen seeded
        self._forced_until = 0.0  # the helper seeds regardless until then (monotonic s; helper thread only)
        self._patient_until = 0.0  # the helper pauses for the worker until then, this batch (helper thread only)
        #: Batches seeded aside so far, and the frames between the last chunk's frame and its landing (status).
        self.batches = 0
        self.last_delay_frames = 0

    @property
    def busy(self) -> bool:
        """Whether a batch is being seeded, or edits wait for one."""
        return self._in_flight > 0 or bool(self._held)

    @property
    def seeded_waiting(self) -> bool:
        """Whether a seeded batch waits for a frame to land on (one with no backlog)."""
        return self._ready_since is not None

    def route(self, frame: Frame, due: Sequence[ParticleEdit], backlog: int | None = None) -> Landing:
        """The edits to hand the backend with ``frame`` (validated ``due`` edits in, in order).

        ``backlog``: frames waiting behind ``frame`` (live mode). The helper seeds only while the worker is
        idle (`WorkerIdle`), or after `MAX_YIELD_S`; a seeded batch lands on a frame with no backlog, or
        `MAX_LANDING_WAIT_FRAMES` after it was seeded.
        """
        landed: SeededEdits | None = None
        now: list[ParticleEdit] = []
        if self._in_flight:
            parts = self._landing(frame.index, backlog)
            if parts is None:  # the batch is being seeded, or waits: everything else waits for it
                if due and not self._held:
                    self._held_since = frame
                self._held.extend(due)
                return Landing([], None)
            self._in_flight = 0
            self.last_delay_frames = frame.index - parts[0].chunk.frame.index
            edits, landed = merged(parts)
            now = [edit.at_frame(frame.index) for edit in edits]
        waiting = [*self._held, *due]
        # Held prompts are seeded on the frame they came due on, not this one: a click shows where the
        # particle was then (seeded on a later frame, a moving particle may no longer be under it).
        source = self._held_since if self._held and self._held_since is not None else frame
        self._held, self._held_since = [], None
        if any(isinstance(edit, Prompt) for edit in waiting):
            self._start(source, [edit.at_frame(source.index) for edit in waiting])
        else:  # anchored where they take effect (those held for a batch came due on an earlier frame)
            now.extend(edit.at_frame(frame.index) for edit in waiting)
        return Landing(now, landed)

    def _landing(self, index: int, backlog: int | None) -> list[_Done] | None:
        """The batch's seeded chunks, if all are seeded and the worker can take them on frame ``index``.

        A new particle's first frames cost several times its steady state: landed while frames wait, a
        batch keeps the worker behind (and a worker that skips frames searches further, which costs more
        still). So a seeded batch waits for a frame with nothing behind it, at most `MAX_LANDING_WAIT_FRAMES`.
        """
        while len(self._parts) < self._in_flight:
            try:
                self._parts.append(self._done.get_nowait())
            except queue.Empty:
                return None
        if self._ready_since is None:
            self._ready_since = index
        if backlog and index - self._ready_since < MAX_LANDING_WAIT_FRAMES:
            return None
        parts, self._parts, self._ready_since = self._parts, [], None
        return parts

    def _start(self, frame: Frame, edits: Sequence[ParticleEdit]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._seed_chunks, name="sam4em-seeding", daemon=True)
            self._thread.start()
        self.batches += 1
        for part in chunks(edits):
            self._in_flight += 1
            self._jobs.put(_Chunk(frame, part))

    def _seed_chunks(self) -> None:
        # Seeding holds the interpreter most of the time; run while the worker has a frame it would halve the
        # worker's speed. The hook pauses it at its next Python call until the worker is idle (module doc).
        outer = sys.gettrace()  # a coverage or debugger tracer of this thread, kept working

        def pause(frame: FrameType, event: TraceEvent, arg: object) -> TraceFunction | None:
            self._pause_while_worker_busy()
            return outer(frame, event, arg) if outer is not None else None

        sys.settrace(pause)
        batch_frame: Frame | None = None
        while True:
            chunk = self._jobs.get()
            if chunk is None:
                return
            if chunk.frame is not batch_frame:  # a new batch: its prompts get the patience together
                batch_frame = chunk.frame
                self._patient_until = time.monotonic() + SEEDING_PATIENCE_S
            try:
                seeded: SeededEdits | None = self._seeder.seed(chunk.frame, chunk.edits)
            except Exception:
                log.exception("seeding %d edits of frame %d aside failed; they are seeded on the frame they land on",
                              len(chunk.edits), chunk.frame.index)
                seeded = None
            self._done.put(_Done(chunk, seeded))

    def _pause_while_worker_busy(self) -> None:
        """Wait while the worker holds a frame (helper thread, at each Python call of the seeding; bounded)."""
        worker = self._worker
        if worker is None or worker.idle or self._closing:
            return
        now = time.monotonic()
        if now < self._forced_until or now > self._patient_until:
            return
        if not worker.wait(MAX_YIELD_S):  # the worker stays behind: seed a slice anyway
            self._forced_until = time.monotonic() + FORCED_SLICE_S

    def close(self) -> None:
        """Stop the helper thread (a chunk it is seeding is finished first, the rest dropped with the run)."""
        if self._thread is not None:
            while True:  # drop the chunks not started
                try:
                    self._jobs.get_nowait()
                except queue.Empty:
                    break
            self._jobs.put(None)
            self._closing = True
            self._thread.join(CLOSE_TIMEOUT_S)
            self._thread = None
