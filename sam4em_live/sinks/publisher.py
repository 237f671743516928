"""Results publisher: a ZeroMQ PUB sink that can never slow the pipeline.

PUB sockets drop messages for a subscriber whose queue is full (high-water
mark) instead of blocking, and we send with NOBLOCK, so a slow or absent
subscriber costs the pipeline only the time to pack a message.

What slow subscribers lose cannot be counted here: libzmq's PUB drops a
message for each subscriber whose queue is full, inside ``zmq_send``, which
still succeeds (the others get it); no socket option or event reports those
per-subscriber drops. ``ZMQ_XPUB_NODROP`` would make the send fail with EAGAIN
instead, but then for *every* subscriber: one subscriber that stops reading
(a paused monitor, a hostile local client) would black out all the others.
So the counter is ``send_errors`` (sends libzmq refused), and a subscriber
counts its own losses from the frame indices it receives (docs/results.md).

The messages carry raw preview pixels: binding beyond loopback logs a loud
warning (docs/results.md says how to protect it).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import zmq

from sam4em_live.control_api import is_loopback_endpoint
from sam4em_live.sinks.results_schema import (
    SCHEMA_ID,
    SCHEMA_VERSION,
    TOPIC_EVENT,
    TOPIC_PREVIEW,
    TOPIC_RESULT,
    TOPIC_STATUS,
    event_entry,
    pack,
    result_message,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.config import PublisherConfig
    from sam4em_live.results import FrameResult, RunInfo

log = logging.getLogger(__name__)


class ResultsPublisher:
    """The results sink on a ZeroMQ PUB socket: one message per frame (schema v1), never blocking the pipeline."""

    def __init__(self, config: PublisherConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, config.sndhwm_messages)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(config.endpoint)
        except zmq.ZMQError:
            self._socket.close()
            raise
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._run: RunInfo | None = None
        self._next_preview_s = 0.0
        self.sent = 0
        self.send_errors = 0
        log.info("publishing results on %s", self.endpoint)
        if not is_loopback_endpoint(config.endpoint):
            log.warning(
                "RESULTS PUBLISHER REACHABLE FROM THE NETWORK: %s is bound beyond loopback without encryption or "
                "authentication; anyone who can reach it receives every result and raw preview pixels. Bind "
                "tcp://127.0.0.1 and tunnel (ssh -L), or firewall the port (docs/results.md).", config.endpoint,
            )

    def open(self, run: RunInfo) -> None:
        self._run = run

    @property
    def counters(self) -> dict[str, int]:
        """`CountingSink` counters: messages handed to libzmq (``sent``) and sends it refused (``send_errors``).

        ``sent`` is not "received": libzmq drops a message, uncounted, for each subscriber whose
        queue is full (see the module docstring); subscribers count their own gaps.
        """
        return {"sent": self.sent, "send_errors": self.send_errors}

    def consume(self, result: FrameResult) -> None:
        run = self._run
        run_id = run.run_id if run else ""
        backend = dict(run.backend) if run else {}
        self._send(pack(TOPIC_RESULT, result_message(result, run_id, backend, self.config.include_masks)))
        for event in result.events:
            self._send(pack(TOPIC_EVENT, {"type": "event", "run_id": run_id, **event_entry(event)}))
        now = time.monotonic()
        if now >= self._next_preview_s:
            self._next_preview_s = now + 1.0 / self.config.preview_fps
            self._send_preview(result, run_id)

    def on_status(self, status: Mapping[str, Any]) -> None:
        self._send(pack(TOPIC_STATUS, {"type": "status", **status}))

    def close(self) -> None:
        self._socket.close(linger=0)

    def _send_preview(self, result: FrameResult, run_id: str) -> None:
        # Decimate by striding: cheap, and the monitor only needs display resolution.
        pixels = result.frame.pixels
        step = max(1, int(np.ceil(max(pixels.shape) / self.config.preview_max_edge_px)))
        preview = np.ascontiguousarray(pixels[::step, ::step])
        body = {
            "schema": SCHEMA_ID, "version": SCHEMA_VERSION, "type": "preview", "run_id": run_id,
            "frame": result.frame.index, "timestamp_s": result.frame.timestamp_s, "step": step,
            "shape": list(pixels.shape), "preview_shape": list(preview.shape), "preview_dtype": preview.dtype.str,
        }
        self._send([TOPIC_PREVIEW, msgpack.packb(body, use_bin_type=True), preview])

    def _send(self, parts: list[Any]) -> None:
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.ZMQError:  # never blocks, never stops the pipeline
            self.send_errors += 1
