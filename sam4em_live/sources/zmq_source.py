"""ZeroMQ frame source (SUB or PULL, connect or bind) speaking wire protocol v1."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import zmq

from sam4em_live.control_api import is_loopback_endpoint
from sam4em_live.frames import Frame, SeriesInfo
from sam4em_live.sources.base import EndOfStream, SourceCounters, reject_worth_logging
from sam4em_live.wire import (
    DEFAULT_MAX_INDEX_JUMP,
    FrameDecoder,
    RejectedMessage,
    SeriesEnd,
    SeriesStart,
)

if TYPE_CHECKING:
    from sam4em_live.config import ZmqSourceConfig

log = logging.getLogger(__name__)



class ZmqFrameSource:
    """Receive frames from a detector (or `sam4em-live camera`) over ZeroMQ.

    Never blocks longer than the ``timeout_s`` given to `next_frame` (it polls),
    so the ingest thread can check its stop event. When connecting, ZeroMQ
    reconnects by itself if the publisher restarts (retry every 100 ms, backing
    off to 250 ms); a restarted publisher starts a new series, which resets the
    index checks. Malformed messages are rejected, counted by reason, logged,
    and skipped; a decoder bug on some input is counted as ``internal_error``
    (and logged with its traceback) rather than ending the stream.
    """

    def __init__(
        self,
        endpoint: str,
        socket_kind: str = "sub",
        mode: str = "connect",
        rcvhwm_frames: int = 64,
        max_header_bytes: int = 65536,
        stop_at_series_end: bool = False,
        context: zmq.Context | None = None,
        max_index_jump: int = DEFAULT_MAX_INDEX_JUMP,
    ) -> None:
        if socket_kind not in ("sub", "pull") or mode not in ("connect", "bind"):
            raise ValueError(f"bad socket kind/mode {socket_kind!r}/{mode!r}")
        self.endpoint = endpoint
        self.socket_kind = socket_kind
        self.mode = mode
        self.rcvhwm_frames = rcvhwm_frames
        self.stop_at_series_end = stop_at_series_end
        self.counters = SourceCounters()
        self._decoder = FrameDecoder(max_header_bytes=max_header_bytes, max_index_jump=max_index_jump)
        self._index_resyncs_logged = 0
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._poller = zmq.Poller()

    @classmethod
    def from_config(cls, config: ZmqSourceConfig, stop_at_series_end: bool = False,
                    context: zmq.Context | None = None) -> ZmqFrameSource:
        """The source the ``[source]`` options describe."""
        return cls(config.endpoint, config.socket, config.mode, config.rcvhwm_frames, config.max_header_bytes,
                   stop_at_series_end, context, max_index_jump=config.max_index_jump)

    @property
    def series(self) -> SeriesInfo | None:
        return self._decoder.series

    def open(self) -> None:
        sock = self._context.socket(zmq.SUB if self.socket_kind == "sub" else zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.rcvhwm_frames)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 250)  # a restarted detector is found within ~0.25 s
        # Heartbeats notice a dead peer on a half-open TCP connection.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        if self.socket_kind == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        if self.mode == "bind":
            sock.bind(self.endpoint)
            if not is_loopback_endpoint(self.endpoint):
                log.warning(
                    "frame source bound to %s, beyond loopback: it accepts frames from ANY host that can reach "
                    "this port, unauthenticated and unencrypted. Bind 127.0.0.1 (and connect the detector "
                    "through an SSH tunnel), or firewall the port to the detector's address (docs/protocol.md).",
                    self.endpoint)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            sock.connect(self.endpoint)
        self._socket = sock
        self._poller.register(sock, zmq.POLLIN)
        log.info("frame source %s %s %s", self.socket_kind.upper(), self.mode, self.endpoint)

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._socket is None:
            raise RuntimeError("open() the source first")
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._poller.poll(remaining_ms):
                return None
            parts = self._socket.recv_multipart(copy=False, flags=zmq.NOBLOCK)
            item = self._decode(parts)
            if isinstance(item, Frame):
                return item
            if time.monotonic() >= deadline:
                return None

    def _decode(self, parts: list[zmq.Frame]) -> Frame | SeriesStart | SeriesEnd | None:
        previous = self._decoder.series
        try:
            item = self._decoder.decode(parts)
        except RejectedMessage as exc:
            self._count_reject(exc.reason, exc.detail)
            return None
        except Exception:
            # The decoder is meant to raise RejectedMessage only; if some input still finds a way through,
            # the stream must not die of it (tests assert this count stays 0).
            self._count_reject("internal_error", "decoder raised", with_traceback=True)
            return None
        if self._decoder.index_resyncs != self._index_resyncs_logged:
            self._index_resyncs_logged = self._decoder.index_resyncs
            log.warning("series %s: frame index jumped beyond the window of %d and stayed there; following it "
                        "from index %s", self._decoder.series.series_id if self._decoder.series else "?",
                        self._decoder.max_index_jump, self._decoder.last_index)
        if isinstance(item, SeriesStart):
            self.counters.series_started += 1
            if previous is not None and previous.series_id == item.series.series_id:
                # A camera restart: its indices start again. The recorder files its frames as a new series
                # of the run (run.json series_list), so they never repeat the earlier frames' rows.
                log.warning("series %s started again (camera restart?): %s %s; its frames are a new series of "
                            "the run", item.series.series_id, item.series.shape, item.series.dtype)
            else:
                log.info("series %s started: %s %s", item.series.series_id, item.series.shape, item.series.dtype)
        elif isinstance(item, SeriesEnd):
            self.counters.series_ended += 1
            log.info("series %s ended (%s frames)", item.series_id, item.n_frames)
            if self.stop_at_series_end:
                raise EndOfStream(item.series_id)
        else:
            self.counters.frames += 1
            self.counters.gaps = self._decoder.gaps
        return item

    def _count_reject(self, reason: str, detail: str, with_traceback: bool = False) -> None:
        n = self.counters.reject(reason)
        if reject_worth_logging(n):
            log.warning("rejected message #%d (%s): %s", n, reason, detail, exc_info=with_traceback)

    def close(self) -> None:
        if self._socket is not None:
            self._poller.unregister(self._socket)
            self._socket.close(linger=0)
            self._socket = None
