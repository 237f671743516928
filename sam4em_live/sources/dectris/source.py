"""`DectrisFrameSource`: a DECTRIS detector's SIMPLON stream (v1 or v2) as a `FrameSource`.

The detector PUSHes; we connect a PULL socket, so ZeroMQ reconnects by itself when the detector (or
its stand-in) restarts. `next_frame` polls with its timeout and never blocks on a bare receive.
Each message is decoded by `stream_v1` or `stream_v2` (``stream = "auto"`` tells them apart per message:
v1 parts are JSON, v2 messages CBOR). A malformed message is counted under a stable reason and skipped.

Series: a detector series (one arm .. disarm) is one of our series, its id ``dectris-<series number>``
(v1) or the detector's ``series_unique_id`` (v2). Image numbers are frame indices: skipped numbers are
gaps, a number at or behind the last one is rejected (``non_monotonic``), a header repeating the current
series is a restart (a new series of the run, as for the ZeroMQ source). Images whose series never
started (we connected late) start it implicitly from the image itself.

Calibration: ``fps`` = 1 / ``frame_time``, ``exposure_s`` = ``count_time``. A DECTRIS pixel size is the
*detector's* (e.g. 75 um); the sample-plane ``pixel_size_nm`` is that over ``magnification`` when the
option is given, or the ``pixel_size_nm`` of the header appendix / v2 ``user_data`` the acquisition
software may add; otherwise unknown (logged), the detector's size kept in the series metadata.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Literal

import zmq
from pydantic import PositiveFloat, PositiveInt

from sam4em_live.config import FrozenModel
from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.plugins import FactoryPlugin
from sam4em_live.sources.base import EndOfStream, SourceCounters, reject_worth_logging
from sam4em_live.sources.dectris.compression import MissingDecompressor, PayloadError
from sam4em_live.sources.dectris.corrections import FlatfieldPolicy, FrameCorrections
from sam4em_live.sources.dectris.messages import (
    DetectorHeader,
    DetectorImage,
    DetectorMessage,
    DetectorSeriesEnd,
    optional_float,
)
from sam4em_live.sources.dectris.stream_v1 import decode_v1, is_v1
from sam4em_live.sources.dectris.stream_v2 import decode_v2

if TYPE_CHECKING:
    from sam4em_live.sources.registry import SourceContext

log = logging.getLogger(__name__)



class DectrisOptions(FrozenModel):
    """Options of the ``dectris`` source: ``[source] kind = "dectris"``."""

    # The detector's stream endpoint: tcp://<DCU>:9999 for stream v1, tcp://<DCU>:31001 for v2.
    endpoint: str = "tcp://127.0.0.1:9999"
    stream: Literal["auto", "v1", "v2"] = "auto"
    channel: str | None = None  # v2 image channel (threshold); None = the first one
    rcvhwm_frames: PositiveInt = 64
    magnification: PositiveFloat | None = None  # sample pixel size = detector pixel size / magnification
    apply_pixel_mask: bool = True
    apply_flatfield: Literal["auto", "always", "never"] = "auto"


class DectrisFrameSource:
    """Frames from a DECTRIS SIMPLON stream (see the module docstring)."""

    def __init__(self, options: DectrisOptions | None = None, stop_at_series_end: bool = False,
                 context: zmq.Context | None = None) -> None:
        self.options = options or DectrisOptions()
        self.endpoint = self.options.endpoint
        self.stop_at_series_end = stop_at_series_end
        self.counters = SourceCounters()
        self.restarts = 0
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._poller = zmq.Poller()
        self._series: SeriesInfo | None = None
        self._header: DetectorHeader | None = None
        self._key: tuple[int, str | None] | None = None  # (series number, unique id) of the current series
        self._corrections: FrameCorrections | None = None
        self._last_index: int | None = None
        self._armed_at_s = 0.0
        self._rearmed = 0  # times the current series was armed again (its frames get a new series id)

    @property
    def series(self) -> SeriesInfo | None:
        return self._series

    def open(self) -> None:
        sock = self._context.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, self.options.rcvhwm_frames)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 250)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.connect(self.endpoint)
        self._socket = sock
        self._poller.register(sock, zmq.POLLIN)
        log.info("DECTRIS stream source: PULL connect %s (stream %s)", self.endpoint, self.options.stream)

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._socket is None:
            raise RuntimeError("open() the source first")
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._poller.poll(remaining_ms):
                return None
            parts = self._socket.recv_multipart(copy=False, flags=zmq.NOBLOCK)
            frame = self._handle(parts)
            if frame is not None:
                return frame
            if time.monotonic() >= deadline:
                return None

    def _handle(self, parts: list[zmq.Frame]) -> Frame | None:
        try:
            message = self._decode([p.buffer for p in parts])
        except PayloadError as exc:
            self._reject(exc.reason, exc.detail)
            return None
        except MissingDecompressor:
            raise  # a missing package is the installation's problem, not the stream's: say so at once
        except Exception:
            self._reject("internal_error", "decoder raised", with_traceback=True)
            return None
        if isinstance(message, DetectorImage):
            return self._frame(message)
        if isinstance(message, DetectorHeader):
            self._start(message)
        else:
            self._end(message)
        return None

    def _decode(self, parts: list[memoryview]) -> DetectorMessage:
        v1 = is_v1(parts[0])
        if self.options.stream != "auto" and v1 != (self.options.stream == "v1"):
            raise PayloadError("wrong_stream_version", f"a {'v1' if v1 else 'v2'} message on a "
                               f"{self.options.stream} source")
        if v1:
            return decode_v1(parts)
        if len(parts) != 1:
            raise PayloadError("part_count", f"v2 message of {len(parts)} parts (expected 1)")
        return decode_v2(parts[0], self.options.channel)

    # -------------------------------------------------------------- series

    def _start(self, header: DetectorHeader) -> None:
        key = (header.series_number, header.series_unique_id)
        self._rearmed = self._rearmed + 1 if key == self._key else 0
        if self._rearmed:
            self.restarts += 1
            log.warning("DECTRIS series %s armed again (detector restart?): its images are a new series of the "
                        "run", header.series_number)
        else:
            log.info("DECTRIS series %s armed: %s, frame time %s s, %s images", header.series_number,
                     header.shape, header.frame_time_s, header.n_images)
        self.counters.series_started += 1
        self._key = key
        self._header = header
        self._series = None  # built at the first image, which says the pixel type
        self._last_index = None
        self._armed_at_s = time.time()
        self._corrections = FrameCorrections(header, self.options.apply_pixel_mask,
                                             self.options.apply_flatfield)

    def _end(self, end: DetectorSeriesEnd) -> None:
        self.counters.series_ended += 1
        log.info("DECTRIS series %s ended", end.series_number)
        if self.stop_at_series_end:
            raise EndOfStream(str(end.series_number))

    def _frame(self, image: DetectorImage) -> Frame | None:
        if self._key is None or image.series_number != self._key[0]:
            # Joined late, or the detector re-armed without its header reaching us: adopt the series.
            self._start(DetectorHeader(image.series_number, "none", image.series_unique_id))
        if self._last_index is not None:
            if image.index <= self._last_index:
                self._reject("non_monotonic", f"image {image.index} after {self._last_index}")
                return None
            self.counters.gaps += image.index - self._last_index - 1
        self._last_index = image.index
        pixels = image.pixels
        corrections = self._corrections
        if corrections is not None and corrections.active:
            pixels = corrections.apply(pixels)
        if self._series is None:
            self._series = self._series_info(pixels.shape, pixels.dtype.str)
        elif pixels.shape != self._series.shape or pixels.dtype.str != self._series.dtype:
            self._reject("size_mismatch", f"image {pixels.shape} {pixels.dtype} in a series of "
                         f"{self._series.shape} {self._series.dtype}")
            return None
        self.counters.frames += 1
        stamp = self._armed_at_s + image.start_time_s if image.start_time_s is not None else time.time()
        return Frame(self._series.series_id, image.index, stamp, pixels, self._series.calibration)

    def _series_info(self, shape: tuple[int, ...], dtype: str) -> SeriesInfo:
        header = self._header
        assert header is not None  # _frame starts a series before its first image
        pixel_size_nm = optional_float(header.appendix.get("pixel_size_nm"))
        if pixel_size_nm is None and header.x_pixel_size_m and self.options.magnification:
            pixel_size_nm = header.x_pixel_size_m * 1e9 / self.options.magnification
        if pixel_size_nm is None:
            log.warning("DECTRIS series %s: no sample pixel size (give the source's `magnification`, or "
                        "calibration.pixel_size_nm)", header.series_number)
        fps = 1.0 / header.frame_time_s if header.frame_time_s else None
        calibration = Calibration(pixel_size_nm=pixel_size_nm, fps=fps, exposure_s=header.count_time_s)
        series_id = header.series_unique_id or f"dectris-{header.series_number}"
        corrections = self._corrections
        metadata = {
            "source": "dectris", "endpoint": self.endpoint, "series_number": header.series_number,
            "header_detail": header.header_detail, "detector_pixel_size_m": header.x_pixel_size_m,
            "n_images": header.n_images, "detector": header.description,
            "masked_pixels": corrections.masked_pixels if corrections else 0,
            "flatfield_applied_here": bool(corrections and corrections.flatfield is not None),
            "flatfield_applied_by_detector": header.flatfield_applied,
            "rearmed": self._rearmed,
        }
        return SeriesInfo(f"{series_id}.{self._rearmed}" if self._rearmed else series_id,
                          (int(shape[0]), int(shape[1])), dtype, calibration, metadata,
                          acquisition_timestamps=True, live=True)

    def _reject(self, reason: str, detail: str, with_traceback: bool = False) -> None:
        n = self.counters.reject(reason)
        if reject_worth_logging(n):
            log.warning("DECTRIS message rejected #%d (%s): %s", n, reason, detail, exc_info=with_traceback)

    def close(self) -> None:
        if self._socket is not None:
            self._poller.unregister(self._socket)
            self._socket.close(linger=0)
            self._socket = None


def _build(options: DectrisOptions, context: SourceContext) -> DectrisFrameSource:
    return DectrisFrameSource(options, stop_at_series_end=context.stop_at_series_end)


DECTRIS_PLUGIN: FactoryPlugin[DectrisFrameSource] = FactoryPlugin(DectrisOptions, _build)

__all__ = ["DECTRIS_PLUGIN", "DectrisFrameSource", "DectrisOptions", "FlatfieldPolicy"]
