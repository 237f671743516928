"""Results receiver for the monitor: a ZeroMQ SUB thread that never touches Qt.

The thread drains every pending message on each poll (CONFLATE cannot be used
with multipart messages), keeps only the latest preview frame and status, and
coalesces results into per-frame particle positions for the trajectory tails.
The GUI thread calls `ResultsSubscriber.take` at display rate and gets one
`FeedUpdate` with everything since its last call, so the display can never fall
behind the stream: when it is slow, it simply skips display frames.

ZeroMQ ``connect`` reconnects by itself when the service restarts; a new
``run_id`` in the results is reported as ``run_changed`` so tails are reset.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from sam4em_live.sinks.results_schema import (
    TOPIC_EVENT,
    TOPIC_PREVIEW,
    TOPIC_RESULT,
    TOPIC_STATUS,
    TOPICS,
    decode_message,
    preview_pixels,
)
from sam4em_live.wire import RejectedMessage

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

POLL_MS = 50  # stop() is honoured within ~this long
MAX_DRAIN_PER_POLL = 2000  # bound one drain so the stop Event is still polled under a flood
MAX_PENDING_POINTS = 4096  # positions kept between two takes (the GUI may be paused)
MAX_PENDING_EVENTS = 200


@dataclass(frozen=True, slots=True)
class Preview:
    """A decimated frame: ``pixels[r, c]`` is full-frame pixel ``(r * step, c * step)``."""

    frame: int
    pixels: np.ndarray
    step: int
    full_shape: tuple[int, int]  # (rows, columns) of the full frame


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """Where the present particles were on one frame (full-frame pixels, x = column, y = row)."""

    frame: int
    timestamp_s: float
    positions: dict[int, tuple[float, float]]


@dataclass(slots=True)
class FeedUpdate:
    """Everything received since the previous `ResultsSubscriber.take`."""

    run_id: str | None = None
    run_changed: bool = False
    latest_result: dict[str, Any] | None = None
    points: list[TrackPoint] = field(default_factory=list)
    stats: dict[int, dict[str, Any]] = field(default_factory=dict)
    preview: Preview | None = None
    status: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    results_received: int = 0  # since the previous take
    rejected_total: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    last_message_s: float = 0.0  # time.monotonic() of the newest message, 0 if none yet

    @property
    def empty(self) -> bool:
        return not (self.latest_result or self.preview or self.status or self.events or self.run_changed)


def _track_point(body: dict[str, Any]) -> TrackPoint:
    positions: dict[int, tuple[float, float]] = {}
    for entry in body.get("particles") or ():
        x, y = entry.get("x"), entry.get("y")
        if entry.get("present") and x is not None and y is not None:
            positions[int(entry["id"])] = (float(x), float(y))
    return TrackPoint(int(body.get("frame", -1)), float(body.get("timestamp_s") or 0.0), positions)


class ResultsSubscriber:
    """Subscribe to a results publisher on a background thread.

    Parameters
    ----------
    endpoint
        The publisher's endpoint, e.g. ``tcp://127.0.0.1:5556``.
    rcvhwm_messages
        Receive high-water mark. Small: if we cannot keep up, the publisher
        drops messages for us (counted by it) rather than anything queueing up.
    """

    def __init__(self, endpoint: str, rcvhwm_messages: int = 200, context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.rcvhwm_messages = rcvhwm_messages
        self._context = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = FeedUpdate()
        self._run_id: str | None = None
        self._rejected_by_reason: dict[str, int] = {}
        self.error: BaseException | None = None
        self.messages_received = 0  # written by the receiver thread only

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("subscriber already started")
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, self.rcvhwm_messages)
        socket.setsockopt(zmq.LINGER, 0)
        for topic in TOPICS:
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        socket.connect(self.endpoint)  # connect succeeds before the peer exists and reconnects after restarts
        self._thread = threading.Thread(target=self._run, args=(socket,), name="sam4em-monitor-sub", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def take(self) -> FeedUpdate:
        """Hand over everything received since the previous call (GUI thread)."""
        with self._lock:
            update, self._pending = self._pending, FeedUpdate(run_id=self._run_id)
            self._pending.rejected_total = update.rejected_total
            self._pending.rejected_by_reason = dict(self._rejected_by_reason)
            self._pending.last_message_s = update.last_message_s
        update.rejected_by_reason = dict(update.rejected_by_reason)
        return update

    # ---------------------------------------------------------------- receiver thread

    def _run(self, socket: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(POLL_MS):
                    continue
                for _ in range(MAX_DRAIN_PER_POLL):
                    try:
                        parts = socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.messages_received += 1
                    self._handle(parts)
        except BaseException as exc:
            self.error = exc
            log.exception("monitor subscriber failed")
        finally:
            socket.close(linger=0)

    def _handle(self, parts: list[Any]) -> None:
        try:
            topic, body, payload = decode_message(parts)
            preview = self._preview(body, payload) if topic == TOPIC_PREVIEW else None
        except (RejectedMessage, KeyError, TypeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, RejectedMessage) else "malformed"
            log.debug("rejected results message: %s", exc)
            with self._lock:
                self._pending.rejected_total += 1
                self._rejected_by_reason[reason] = self._rejected_by_reason.get(reason, 0) + 1
                self._pending.rejected_by_reason = dict(self._rejected_by_reason)
            return
        point = _track_point(body) if topic == TOPIC_RESULT else None
        with self._lock:
            if topic != TOPIC_STATUS or self._run_id is None:
                self._check_run(body.get("run_id"))  # may replace self._pending
            pending = self._pending
            pending.last_message_s = time.monotonic()
            if topic == TOPIC_RESULT and point is not None:
                pending.latest_result = body
                pending.results_received += 1
                pending.points.append(point)
                del pending.points[:-MAX_PENDING_POINTS]
                for key, value in (body.get("stats") or {}).items():
                    if isinstance(value, dict):
                        pending.stats[int(key)] = value
            elif topic == TOPIC_PREVIEW:
                pending.preview = preview
            elif topic == TOPIC_STATUS:
                pending.status = body
            elif topic == TOPIC_EVENT:
                pending.events.append(body)
                del pending.events[:-MAX_PENDING_EVENTS]

    def _check_run(self, run_id: Any) -> None:
        """A new run id (service restarted) drops what was pending from the old run. Lock held."""
        if not run_id or run_id == self._run_id:
            return
        changed = self._run_id is not None
        self._run_id = str(run_id)
        if changed:
            log.info("new run %s: resetting the display", run_id)
            self._pending = FeedUpdate(run_id=self._run_id, run_changed=True,
                                       rejected_total=self._pending.rejected_total,
                                       rejected_by_reason=dict(self._rejected_by_reason))
        self._pending.run_id = self._run_id

    @staticmethod
    def _preview(body: dict[str, Any], payload: Any) -> Preview:
        if payload is None:
            raise RejectedMessage("missing_payload", "preview without pixels")
        pixels = preview_pixels(body, payload)
        if pixels.ndim != 2:
            raise RejectedMessage("bad_shape", f"preview must be 2-D, got {pixels.shape}")
        step = int(body.get("step", 1))
        rows, cols = body.get("shape") or (pixels.shape[0] * step, pixels.shape[1] * step)
        return Preview(int(body.get("frame", -1)), pixels, max(step, 1), (int(rows), int(cols)))
