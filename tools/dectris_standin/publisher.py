"""`DectrisStandIn`: the messages of a DECTRIS detector's stream interface, over a real ZeroMQ PUSH socket.

Written from DECTRIS's published documentation (SIMPLON API manual, stream interface; github.com/dectris/
documentation stream_v2/README.md and cbor/dectris-compression-tag.md), not from any receiver of ours:

- v1: ``dheader-1.0`` (+ detector config with ``header_detail`` basic/all, + ``dflatfield-1.0`` /
  ``dpixelmask-1.0`` / ``dcountrate_table-1.0`` blobs with ``all``, + an optional appendix), images of four
  parts (``dimage-1.0``, ``dimage_d-1.0``, blob, ``dconfig-1.0`` in ns) and ``dseries_end-1.0``;
  encodings ``<``, ``lz4<`` and ``bs<bits>-lz4<``.
- v2: one CBOR map per message (self-described, tag 55799), ``start`` / ``image`` / ``end``, arrays as
  tag 40 over RFC 8746 typed arrays, compressed byte strings as tag 56500 ``["bslz4", elem, bytes]`` /
  ``["lz4", 0, bytes]``, times as rationals.

Sends never block: each waits for the socket to accept it in slices of 100 ms and gives up when the
``stop`` event is set (a PUSH socket with no peer holds messages back).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import cbor2
import numpy as np
import zmq

from sam4em_live.sources.dectris.compression import encode_pixels
from sam4em_live.sources.dectris.stream_v2 import TAG_DECTRIS_COMPRESSION, TAG_SELF_DESCRIBED, typed_array_tag

if TYPE_CHECKING:
    from collections.abc import Iterable

Stream = Literal["v1", "v2"]
Compression = Literal["none", "bslz4", "lz4"]
#: The time base of v2 rationals (DECTRIS: constant for a series); 100 MHz.
TIME_BASE_HZ = 100_000_000


@dataclass(frozen=True)
class DetectorSettings:
    """What the stand-in's detector config says (SI units, as DECTRIS sends them)."""

    shape: tuple[int, int] = (256, 256)  # (rows, columns)
    dtype: str = "<u2"
    frame_time_s: float = 0.01
    count_time_s: float = 0.0099
    pixel_size_m: float = 75e-6
    header_detail: Literal["all", "basic", "none"] = "basic"
    pixel_mask: np.ndarray | None = None  # uint32, (rows, columns); sent with header_detail = "all"
    flatfield: np.ndarray | None = None  # float32, (rows, columns); sent with header_detail = "all"
    flatfield_applied: bool = False
    pixel_mask_applied: bool = True
    appendix: dict[str, Any] = field(default_factory=dict)
    description: str = "stand-in EIGER2 (sam4em-live tools/dectris_standin)"


def _bits(dtype: np.dtype) -> int:
    return dtype.itemsize * 8


class DectrisStandIn:
    """A DECTRIS-like PUSH socket sending stream ``v1`` or ``v2`` messages (bound; port 0 = any free one)."""

    def __init__(self, stream: Stream = "v2", compression: Compression = "bslz4",
                 endpoint: str = "tcp://127.0.0.1:0", settings: DetectorSettings | None = None,
                 sndhwm: int = 64, context: zmq.Context | None = None) -> None:
        self.stream = stream
        self.compression = compression
        self.settings = settings or DetectorSettings()
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.bind(endpoint)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0

    # -------------------------------------------------------------- sending

    def send(self, parts: list[bytes], stop: threading.Event | None = None, timeout_s: float = 10.0) -> bool:
        """Send one message (its parts); False when ``stop`` is set or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while not (stop is not None and stop.is_set()):
            if self._socket.poll(100, zmq.POLLOUT):
                self._socket.send_multipart(parts, copy=False)
                self.sent += 1
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def arm(self, series: int, n_images: int, unique_id: str | None = None,
            stop: threading.Event | None = None) -> bool:
        return self.send(self.header_message(series, n_images, unique_id), stop)

    def image(self, series: int, index: int, pixels: np.ndarray, unique_id: str | None = None,
              stop: threading.Event | None = None) -> bool:
        return self.send(self.image_message(series, index, pixels, unique_id), stop)

    def disarm(self, series: int, unique_id: str | None = None, stop: threading.Event | None = None) -> bool:
        return self.send(self.end_message(series, unique_id), stop)

    def close(self) -> None:
        self._socket.close(linger=0)

    # -------------------------------------------------------------- messages

    def header_message(self, series: int, n_images: int, unique_id: str | None = None) -> list[bytes]:
        s = self.settings
        rows, cols = s.shape
        if self.stream == "v2":
            start: dict[str, Any] = {
                "type": "start", "series_id": series, "series_unique_id": unique_id or f"standin-{series}",
                "arm_date": cbor2.CBORTag(0, "2026-12-07T04:00:00Z"), "channels": ["threshold_1"],
                "count_time": s.count_time_s, "frame_time": s.frame_time_s, "image_size_x": cols,
                "image_size_y": rows, "number_of_images": n_images, "pixel_size_x": s.pixel_size_m,
                "pixel_size_y": s.pixel_size_m, "detector_description": s.description,
                "pixel_mask_enabled": s.pixel_mask_applied, "flatfield_enabled": s.flatfield_applied,
                "countrate_correction_enabled": False, "user_data": s.appendix,
            }
            if s.header_detail == "all":
                if s.pixel_mask is not None:
                    start["pixel_mask"] = {"threshold_1": self.array_tag(np.asarray(s.pixel_mask, "<u4"), "none")}
                if s.flatfield is not None:
                    start["flatfield"] = {"threshold_1": self.array_tag(np.asarray(s.flatfield, "<f4"), "none")}
            return [self._cbor(start)]
        parts = [json.dumps({"htype": "dheader-1.0", "series": series, "header_detail": s.header_detail}).encode()]
        if s.header_detail != "none":
            parts.append(json.dumps({
                "x_pixel_size": s.pixel_size_m, "y_pixel_size": s.pixel_size_m, "x_pixels_in_detector": cols,
                "y_pixels_in_detector": rows, "frame_time": s.frame_time_s, "count_time": s.count_time_s,
                "nimages": n_images, "ntrigger": 1, "trigger_mode": "ints",
                "bit_depth_image": _bits(np.dtype(s.dtype)), "description": s.description,
                "flatfield_correction_applied": s.flatfield_applied, "pixel_mask_applied": s.pixel_mask_applied,
            }).encode())
        if s.header_detail == "all":
            flat = np.ones(s.shape, "<f4") if s.flatfield is None else np.asarray(s.flatfield, "<f4")
            mask = np.zeros(s.shape, "<u4") if s.pixel_mask is None else np.asarray(s.pixel_mask, "<u4")
            for htype, blob in (("dflatfield-1.0", flat), ("dpixelmask-1.0", mask),
                                ("dcountrate_table-1.0", np.zeros((1000, 2), "<f4"))):
                parts.append(json.dumps({"htype": htype, "shape": [blob.shape[1], blob.shape[0]],
                                         "type": blob.dtype.name}).encode())
                parts.append(blob.tobytes())
        if s.appendix:
            parts.append(json.dumps(s.appendix).encode())
        return parts

    def image_message(self, series: int, index: int, pixels: np.ndarray, unique_id: str | None = None) -> list[bytes]:
        arr = np.ascontiguousarray(pixels)
        if self.stream == "v2":
            return self.v2_image_message(series, index, self.array_tag(arr, self.compression), unique_id)
        start_ticks = round(index * self.settings.frame_time_s * TIME_BASE_HZ)
        algorithm = {"none": "raw", "lz4": "lz4-block", "bslz4": "bslz4"}[self.compression]
        blob = encode_pixels(arr, algorithm)
        encoding = {"raw": "<", "lz4-block": "lz4<", "bslz4": f"bs{_bits(arr.dtype)}-lz4<"}[algorithm]
        start_ns = start_ticks * (1_000_000_000 // TIME_BASE_HZ)
        count_ns = round(self.settings.count_time_s * 1e9)
        return [
            json.dumps({"htype": "dimage-1.0", "series": series, "frame": index,
                        "hash": hashlib.md5(blob).hexdigest()}).encode(),
            json.dumps({"htype": "dimage_d-1.0", "shape": [arr.shape[1], arr.shape[0]], "type": arr.dtype.name,
                        "encoding": encoding, "size": len(blob)}).encode(),
            blob,
            json.dumps({"htype": "dconfig-1.0", "start_time": start_ns, "stop_time": start_ns + count_ns,
                        "real_time": count_ns}).encode(),
        ]

    def v2_image_message(self, series: int, index: int, data: cbor2.CBORTag, unique_id: str | None = None
                         ) -> list[bytes]:
        """A v2 image message around an already encoded array (`array_tag`): senders encode pixels once."""
        start_ticks = round(index * self.settings.frame_time_s * TIME_BASE_HZ)
        return [self._cbor({
            "type": "image", "series_id": series, "series_unique_id": unique_id or f"standin-{series}",
            "image_id": index, "series_date": cbor2.CBORTag(0, "2026-12-07T04:00:00Z"),
            "start_time": [start_ticks, TIME_BASE_HZ],
            "stop_time": [start_ticks + round(self.settings.count_time_s * TIME_BASE_HZ), TIME_BASE_HZ],
            "real_time": [round(self.settings.count_time_s * TIME_BASE_HZ), TIME_BASE_HZ],
            "data": {"threshold_1": data},
        })]

    def end_message(self, series: int, unique_id: str | None = None) -> list[bytes]:
        if self.stream == "v2":
            return [self._cbor({"type": "end", "series_id": series,
                                "series_unique_id": unique_id or f"standin-{series}"})]
        return [json.dumps({"htype": "dseries_end-1.0", "series": series}).encode()]

    @staticmethod
    def array_tag(arr: np.ndarray, compression: str) -> cbor2.CBORTag:
        """``arr`` as a v2 array: tag 40 over a typed array, its bytes compressed as ``compression`` says."""
        data: bytes | cbor2.CBORTag = arr.tobytes()
        if compression == "bslz4":
            data = cbor2.CBORTag(TAG_DECTRIS_COMPRESSION, ["bslz4", arr.itemsize, encode_pixels(arr, "bslz4")])
        elif compression == "lz4":
            data = cbor2.CBORTag(TAG_DECTRIS_COMPRESSION, ["lz4", 0, encode_pixels(arr, "lz4-hdf5")])
        return cbor2.CBORTag(40, [list(arr.shape), cbor2.CBORTag(typed_array_tag(arr.dtype), data)])

    @staticmethod
    def _cbor(message: dict[str, Any]) -> bytes:
        return cbor2.dumps(cbor2.CBORTag(TAG_SELF_DESCRIBED, message))


def publish_series(standin: DectrisStandIn, frames: Iterable[np.ndarray], series: int = 1,
                   n_images: int | None = None, fps: float | None = None, stop: threading.Event | None = None,
                   unique_id: str | None = None) -> int:
    """Arm, send ``frames`` (paced at ``fps``, or as fast as the receiver takes them), disarm; frames sent."""
    frames = list(frames) if n_images is None else frames
    total = n_images if n_images is not None else len(frames)  # type: ignore[arg-type]
    if not standin.arm(series, total, unique_id, stop):
        return 0
    sent = 0
    t0 = time.monotonic()
    for i, pixels in enumerate(frames):
        if fps:
            delay = t0 + i / fps - time.monotonic()
            if delay > 0 and stop is not None and stop.wait(delay):
                break
            if delay > 0 and stop is None:
                time.sleep(delay)
        if not standin.image(series, i, pixels, unique_id, stop):
            break
        sent += 1
    standin.disarm(series, unique_id, stop)
    return sent
