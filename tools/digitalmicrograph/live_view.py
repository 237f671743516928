"""`LiveViewPublisher`: looks at a `LiveView` and publishes each new frame over the sam4em-live wire protocol.

The wire protocol v1 (docs/protocol.md) is encoded here directly (msgpack header + raw pixels) so that
DigitalMicrograph's Python needs only numpy, pyzmq and msgpack; tests/test_dm_live_script.py decodes every
message with the service's own decoder, which keeps the two in step.

Series: one series per run of the publisher (``dm-<camera>-<start time>``), and a new one whenever the
image's shape, pixel type or calibration changes (binning, magnification). Frames are numbered by the
live view's frame counter when it has one (frames too fast to see are gaps), else 0, 1, 2... over the
frames whose pixels differ from the previous one (an unchanged live image is not a new frame).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import msgpack
import numpy as np
import zmq

from .adapter import LiveFrame, LiveView

log = logging.getLogger(__name__)

PROTOCOL_ID = "sam4em-frame"
PROTOCOL_VERSION = 1
#: Pixel types the wire protocol carries (others are converted: int8 -> int16, float16 -> float32...).
WIRE_DTYPES = ("|u1", "<u2", "<u4", "<i2", "<i4", "<f4", "<f8")
_WIDEN = {"|i1": "<i2", "<f2": "<f4", "|b1": "|u1", "<u8": "<f8", "<i8": "<f8"}


def wire_pixels(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as a contiguous little-endian array of a wire dtype (a copy only when needed)."""
    arr = np.ascontiguousarray(pixels)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    name = arr.dtype.str
    if name not in WIRE_DTYPES:
        arr = arr.astype(_WIDEN.get(name, "<f4"))
    return arr


def _header(kind: str, series_id: str, **fields: Any) -> bytes:
    header = {"protocol": PROTOCOL_ID, "version": PROTOCOL_VERSION, "type": kind, "series_id": series_id}
    header.update({k: v for k, v in fields.items() if v is not None})
    return msgpack.packb(header, use_bin_type=True)


def _fingerprint(pixels: np.ndarray) -> bytes:
    """A cheap look at ~4k pixels spread over the image: enough to tell two noisy camera frames apart."""
    flat = pixels.reshape(-1)
    return flat[:: max(1, flat.size // 4096)].tobytes()


class LiveViewPublisher:
    """Publish new frames of ``view`` on a bound PUB socket (``endpoint``; port 0 = any free port)."""

    def __init__(self, view: LiveView, endpoint: str = "tcp://127.0.0.1:5555", sndhwm: int = 16,
                 context: zmq.Context | None = None) -> None:
        self.view = view
        self._socket = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.setsockopt(zmq.LINGER, 500)
        self._socket.bind(endpoint)
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.series_id: str | None = None
        self._series_key: tuple[Any, ...] | None = None
        self._last_fingerprint: bytes | None = None
        self._next_index = 0
        self._first_number = 0  # the live view's frame number of the series' frame 0
        self._sent_in_series = 0
        self.frames_sent = 0
        self.unchanged_looks = 0  # looks at the live image that found the frame already sent
        self.series_started = 0

    def publish_new(self) -> bool:
        """Look at the live view once; publish its frame if it is new. True when a frame was sent."""
        frame = self.view.grab()
        if frame is None:
            return False
        fingerprint = _fingerprint(frame.pixels)
        if frame.frame_number is None and fingerprint == self._last_fingerprint:
            self.unchanged_looks += 1
            return False
        pixels = wire_pixels(frame.pixels)
        key = (pixels.shape, pixels.dtype.str, frame.pixel_size_nm, frame.exposure_s, frame.fps)
        if key != self._series_key:
            self._start_series(pixels, frame)
            self._series_key = key
        if frame.frame_number is not None:
            if self._sent_in_series and frame.frame_number - self._first_number < self._next_index:
                self.unchanged_looks += 1  # the camera has not moved on since the last look
                return False
            index = frame.frame_number - self._first_number
        else:
            index = self._next_index
        self._last_fingerprint = fingerprint
        self._send_frame(pixels, index, frame)
        self._next_index = index + 1
        return True

    def run(self, stop: Any, poll_interval_s: float = 0.002, max_frames: int | None = None) -> int:
        """Publish until ``stop`` (a ``threading.Event``) is set or ``max_frames`` are sent; frames sent.

        Looks at the live view every ``poll_interval_s`` at most; never blocks (sends drop frames a slow
        subscriber has no room for, as a camera would).
        """
        sent = 0
        try:
            while not stop.is_set() and (max_frames is None or sent < max_frames):
                if self.publish_new():
                    sent += 1
                else:
                    stop.wait(poll_interval_s)
        finally:
            self.end_series()
        return sent

    def _start_series(self, pixels: np.ndarray, frame: LiveFrame) -> None:
        self.end_series()
        camera = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.view.name)[:64] or "camera"
        # unique across restarts of the script (the service files a repeated id as the same series)
        self.series_id = f"dm-{camera}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.series_started += 1
        self._first_number = frame.frame_number or 0
        self._next_index = 0
        self._sent_in_series = 0
        metadata: dict[str, Any] = {"source": "digitalmicrograph", "camera": self.view.name,
                                    "frame_numbers": frame.frame_number is not None}
        self._socket.send(_header("series_start", self.series_id, shape=list(pixels.shape), dtype=pixels.dtype.str,
                                  metadata=metadata, **self._calibration(frame)))

    def end_series(self) -> None:
        if self.series_id is not None:
            self._socket.send(_header("series_end", self.series_id, n_frames=self._sent_in_series))
            self.series_id = None
            self._series_key = None

    def _send_frame(self, pixels: np.ndarray, index: int, frame: LiveFrame) -> None:
        assert self.series_id is not None
        header = _header("frame", self.series_id, index=int(index), timestamp_s=float(frame.timestamp_s),
                         shape=[int(pixels.shape[0]), int(pixels.shape[1])], dtype=pixels.dtype.str,
                         **self._calibration(frame))
        parts: list[Any] = [header, pixels]
        try:
            # pixels is a fresh copy (grab copies DigitalMicrograph's buffer): ZeroMQ may read it after we return
            self._socket.send_multipart(parts, copy=pixels.nbytes < 65536, flags=zmq.NOBLOCK)
            self.frames_sent += 1
            self._sent_in_series += 1
        except zmq.Again:
            pass

    @staticmethod
    def _calibration(frame: LiveFrame) -> dict[str, float | None]:
        return {"pixel_size_nm": frame.pixel_size_nm, "exposure_s": frame.exposure_s, "fps": frame.fps}

    def close(self) -> None:
        self.end_series()
        self._socket.close()
        self.view.close()
