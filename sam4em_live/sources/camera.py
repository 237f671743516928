"""Stand-in detector: publishes frames over ZeroMQ with wire protocol v1.

Used by `sam4em-live camera`, the demo and the tests when no microscope is
attached. It pumps any `FrameSource` (a replayed recording, the simulator)
out of a PUB (or PUSH) socket; the source does the pacing. A recording in any
format of docs/formats.md (TIFF, DigitalMicrograph, Velox, TIA, MRC, video,
frame folders, Gatan in-situ trees) is replayed at its own frame rate, and its
calibration travels in the series-start and frame headers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import zmq

from sam4em_live.frames import Calibration, SeriesInfo
from sam4em_live.sources.base import EndOfStream, FrameSource
from sam4em_live.wire import ZERO_COPY_MIN_BYTES, encode_frame, encode_series_end, encode_series_start

if TYPE_CHECKING:
    import threading

    import numpy as np

log = logging.getLogger(__name__)


class FramePublisher:
    """Bind a PUB/PUSH socket and send series and frame messages.

    Large frames go out zero-copy. ZeroMQ may still be reading an array after
    `send_frame` returns, so the caller hands over ownership: the array must
    not be modified afterwards (every source here yields fresh arrays or
    read-only views of a recording).
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:0", socket_kind: str = "pub",
                 sndhwm_frames: int = 64, context: zmq.Context | None = None) -> None:
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB if socket_kind == "pub" else zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm_frames)
        self._socket.setsockopt(zmq.LINGER, 500)
        self._socket.bind(endpoint)
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.frames_sent = 0
        self.frames_refused = 0  # PUSH with no peer / HWM reached

    def send_series_start(self, series: SeriesInfo) -> None:
        self._socket.send_multipart(encode_series_start(series))

    def send_series_end(self, series_id: str, n_frames: int | None = None) -> None:
        self._socket.send_multipart(encode_series_end(series_id, n_frames))

    def send_frame(self, pixels: np.ndarray, series_id: str, index: int,
                   timestamp_s: float | None = None, calibration: Calibration | None = None) -> None:
        parts = encode_frame(pixels, series_id, index, timestamp_s, calibration)
        try:
            self._socket.send_multipart(parts, copy=parts[1].nbytes < ZERO_COPY_MIN_BYTES, flags=zmq.NOBLOCK)
            self.frames_sent += 1
        except zmq.Again:
            self.frames_refused += 1

    def send_raw(self, parts: list[Any]) -> None:
        """Send arbitrary parts (tests of malformed input use this)."""
        self._socket.send_multipart(parts)

    def close(self) -> None:
        self._socket.close()


def pump(source: FrameSource, publisher: FramePublisher, stop: threading.Event,
         max_frames: int | None = None, series_start_delay_s: float = 0.0) -> int:
    """Publish frames from ``source`` until it ends, ``max_frames`` or ``stop``.

    Returns the number of frames sent. ``series_start_delay_s`` gives
    subscribers time to connect before the first frame (PUB drops messages
    sent before a subscriber joins).
    """
    source.open()
    sent = 0
    series_id = None
    try:
        if stop.wait(series_start_delay_s):
            return 0
        while not stop.is_set() and (max_frames is None or sent < max_frames):
            try:
                frame = source.next_frame(0.1)
            except EndOfStream:
                break
            if frame is None:
                continue
            if frame.series_id != series_id:
                if series_id is not None:
                    publisher.send_series_end(series_id, sent)
                series_id = frame.series_id
                info = source.series or SeriesInfo(series_id, frame.shape, frame.pixels.dtype.str, frame.calibration)
                publisher.send_series_start(info)
            publisher.send_frame(frame.pixels, frame.series_id, frame.index, frame.timestamp_s, frame.calibration)
            sent += 1
        if series_id is not None:
            publisher.send_series_end(series_id, sent)
    finally:
        source.close()
    log.info("camera sent %d frames (%d refused)", sent, publisher.frames_refused)
    return sent
