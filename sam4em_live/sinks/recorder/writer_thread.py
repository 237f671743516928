"""The recorder's background writer: one thread, one bounded queue of typed messages.

Callers (the pipeline thread, the control channel's thread) only put small frozen messages
(`messages`) on the queue; the thread hands each to a `MessageHandler` method chosen by the
message's type, and it alone touches the files.

Backpressure policy — what `WriterThread.submit` does when the queue is full (the disk has been
slower than the pipeline for ``capacity`` results, ≈ 50 s at 80 fps with the default 4096):

=====================  ==========================================================================
message                when the queue is full
=====================  ==========================================================================
`ResultMessage`        **never dropped**: waits in 100 ms slices until there is room, counting
                       ``recorder_backpressure`` (and logging it). This slows the pipeline rather
                       than losing data; under the ``latest`` frame-queue policy the frame queue then
                       drops frames, counted as usual. Only if the writer thread is gone is the result
                       counted in ``results_lost`` and the call returns.
`StatusMessage`        skipped at once, counted in ``status_skipped`` (another comes within a second).
`AnnotationMessage`    waits up to 1 s (notes are rare and come from the control channel's thread, not
                       the pipeline), then counted in ``results_lost`` and logged.
`CloseMessage`         waits while the writer thread lives.
=====================  ==========================================================================

When the queue has room every `submit` is one ``put_nowait`` (≈ 2 µs on the pipeline thread).

Batching: after writing, the thread waits `BATCH_WAIT_S` for more messages, then writes all that
arrived (and the handler sends their mask pages on in one go), so it takes the GIL that the
segmenting worker needs about 50 times a second instead of once per frame. Files are flushed at
least every `FLUSH_INTERVAL_S` and whenever the queue runs dry. A handler error that escapes the
handler is logged and counted in ``write_errors``; the thread keeps draining the queue so the
pipeline never stalls on it. (The run directory's handler deals with the disk's own refusals
itself: it stops the recording cleanly, see `run_writer`.)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Protocol

from sam4em_live.sinks.recorder.messages import (
    AnnotationMessage,
    CloseMessage,
    RecorderCounts,
    RecorderMessage,
    ResultMessage,
    StatusMessage,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
#: After writing, the writer thread waits this long for more results before it looks at the queue again.
BATCH_WAIT_S = 0.02
#: How long a full queue may hold an annotation before it is counted lost.
ANNOTATION_WAIT_S = 1.0
#: Waiting slices (and the idle poll of the thread): the longest a waiter goes without checking the thread.
POLL_S = 0.1
#: A close that takes longer than this logs how much is still queued, then keeps waiting.
CLOSE_LOG_INTERVAL_S = 5.0


class MessageHandler(Protocol):
    """The files behind the writer thread. Every method is called on the writer thread only.

    - ``start()`` once, before the first message (e.g. to open a file whose writer may still be starting).
    - ``write_result`` / ``write_status`` / ``write_annotation`` once per message of that type, in
      queue order.
    - ``end_batch()`` when the queue runs dry after a write (hand batched work on).
    - ``flush()`` at least once a second while there is unflushed data, and when the queue is idle.
    - ``finish()`` once, after the `CloseMessage`: flush, close, finalise.

    Any method may raise; the error is logged, counted in ``write_errors`` and the thread goes on.
    """

    def start(self) -> None: ...

    def write_result(self, message: ResultMessage) -> None: ...

    def write_status(self, message: StatusMessage) -> None: ...

    def write_annotation(self, message: AnnotationMessage) -> None: ...

    def end_batch(self) -> None: ...

    def flush(self) -> None: ...

    def finish(self) -> None: ...


class WriterThread:
    """A bounded queue drained by one daemon thread into a `MessageHandler` (policy: module docstring).

    The queue exists from construction, so messages submitted before `start` wait in it and are
    written once the thread runs.
    """

    def __init__(self, capacity: int, counts: RecorderCounts, name: str = "sam4em-recorder") -> None:
        self.counts = counts
        self._queue: queue.Queue[RecorderMessage] = queue.Queue(maxsize=capacity)
        #: The fast path alone, for a caller at the camera rate (`Recorder.consume`): raises `queue.Full`
        #: when there is no room, and the caller then applies the policy with `when_full`. `submit` does both.
        self.put_nowait = self._queue.put_nowait
        self._name = name
        self._thread: threading.Thread | None = None
        self._handler: MessageHandler | None = None
        self._last_error_log = 0.0

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, handler: MessageHandler) -> None:
        if self._thread is not None:
            raise RuntimeError("writer thread already started")
        self._handler = handler
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- any thread

    def submit(self, message: RecorderMessage) -> None:
        """Queue ``message``; returns at once while there is room (when full: the policy above)."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.when_full(message)

    def when_full(self, message: RecorderMessage) -> None:
        """Apply the policy (module docstring) to a message that found the queue full."""
        match message:
            case StatusMessage():
                self.counts.status_skipped += 1
            case AnnotationMessage():
                if not self._put_within(message, ANNOTATION_WAIT_S):
                    self.counts.results_lost += 1
                    log.error("recorder queue full; annotation %r not recorded", message.text)
            case ResultMessage():
                self.counts.recorder_backpressure += 1
                n = self.counts.recorder_backpressure
                if n in (1, 10, 100) or n % 1000 == 0:
                    log.warning("recorder_backpressure: writer queue full (%d items), the pipeline waits for "
                                "the disk (%d times so far)", self.capacity, n)
                if not self._put_while_alive(message):
                    self.counts.results_lost += 1
                    log.error("recorder writer thread is not running; result not recorded")
            case CloseMessage():
                self._put_while_alive(message)

    def _put_within(self, message: RecorderMessage, timeout_s: float) -> bool:
        try:
            self._queue.put(message, timeout=timeout_s)
            return True
        except queue.Full:
            return False

    def _put_while_alive(self, message: RecorderMessage) -> bool:
        while self.alive:
            if self._put_within(message, POLL_S):
                return True
        return False

    def close(self) -> None:
        """Send the `CloseMessage` and wait until everything queued is written (logs while it waits)."""
        thread = self._thread
        if thread is None:
            return
        t0 = time.monotonic()
        self.submit(CloseMessage())
        while thread.is_alive():
            thread.join(CLOSE_LOG_INTERVAL_S)
            if thread.is_alive():
                log.info("recorder: still writing, %d items queued (%.0f s)", self.queued, time.monotonic() - t0)

    # ------------------------------------------------------------- the writer thread

    def _run(self) -> None:
        handler = self._handler
        assert handler is not None
        self._guarded(handler.start)
        next_flush = time.monotonic() + FLUSH_INTERVAL_S
        dirty = False
        while True:
            timeout = min(POLL_S, max(0.0, next_flush - time.monotonic())) if dirty else POLL_S
            try:
                message: RecorderMessage | None = self._queue.get(timeout=timeout)
            except queue.Empty:
                message = None
            if isinstance(message, CloseMessage):
                break
            if message is not None:
                self._dispatch(handler, message)
                dirty = True
                if self._queue.empty():
                    self._guarded(handler.end_batch)
                    # Let results gather: this thread then takes the GIL (which the segmenting worker
                    # needs) once per batch instead of once per frame. Flushing and closing are unaffected.
                    time.sleep(BATCH_WAIT_S)
            now = time.monotonic()
            if dirty and (message is None or now >= next_flush):
                self._guarded(handler.flush)
                dirty, next_flush = False, now + FLUSH_INTERVAL_S
        self._guarded(handler.finish)

    def _dispatch(self, handler: MessageHandler, message: RecorderMessage) -> None:
        match message:
            case ResultMessage():
                self._guarded(handler.write_result, message)
            case StatusMessage():
                self._guarded(handler.write_status, message)
            case AnnotationMessage():
                self._guarded(handler.write_annotation, message)

    def _guarded(self, fn: Callable[..., None], *args: object) -> None:
        # A handler error must not kill the thread: the queue would fill and stall the pipeline.
        try:
            fn(*args)
        except Exception:
            self.counts.write_errors += 1
            now = time.monotonic()
            if now - self._last_error_log > 5.0:
                self._last_error_log = now
                log.exception("recorder: write failed (%d errors so far)", self.counts.write_errors)
