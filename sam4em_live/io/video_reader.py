"""Video exports (MP4, AVI, MOV, MKV) through PyAV (FFmpeg's decoders); imageio reads the header.

Frames are decoded one at a time, straight to 8-bit grey (FFmpeg converts the luma plane), in order:
replay reads a recording from its first frame to its last, so the reader keeps one open decoder and
restarts it only when asked for a frame out of order (a loop back to frame 0). Memory stays one frame
(plus the frames FFmpeg's threads decode ahead).

Speed (issue 19): frames are decoded with PyAV directly, FFmpeg's frame and slice threads on (``AUTO``),
and converted to grey by one `VideoReformatter` kept for the whole file, so FFmpeg's scaler context is
made once, not per frame as imageio's ``iter(format="gray")`` does -- the same conversion, so the same
pixels (tested against imageio on files made in the tests), at about half the CPU per frame. The grey
frame is handed out without a copy where its rows are not padded (the array keeps the frame's buffer
alive).

Calibration: the container's average frame rate is the frame rate (a video export is written at the
acquisition rate or at a chosen playback rate -- the user knows which and can override it with
``--fps``); a video has no pixel size, so it is always reported missing (``--pixel-size-nm``).
Video codecs are lossy (H.264, MPEG-4): pixel values are close to, not equal to, the camera's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.frames import Calibration
from sam4em_live.io.frame_readers import ReplayError
from sam4em_live.io.vendor_calibration import tell_missing

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv")


class VideoReader:
    """Grey frames of a video file, decoded in order with imageio + PyAV."""

    def __init__(self, path: Path) -> None:
        import imageio.v3 as iio

        self.path = path
        try:
            props = iio.improps(path, plugin="pyav")
            meta = iio.immeta(path, plugin="pyav")
        except Exception as exc:  # PyAV/imageio raise many types for files FFmpeg cannot demux
            raise ReplayError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from None
        if len(props.shape) < 3 or props.shape[0] < 1:
            raise ReplayError(f"{path}: a video without frames (shape {props.shape})")
        self.n_frames = int(props.shape[0])
        self.shape = (int(props.shape[1]), int(props.shape[2]))
        self.dtype = "|u1"
        fps = meta.get("fps")
        fps = float(fps) if isinstance(fps, (int, float)) and fps > 0 else None
        self.calibration = Calibration(fps=fps)
        missing = ["pixel_size_nm"] + ([] if fps else ["fps"])
        self.metadata: dict[str, Any] = {
            "format": "video", "reader": "imageio+pyav", "codec": str(meta.get("codec", "")),
            "memory_mapped": False, "calibration_from": {"fps": "container frame rate"} if fps else {},
            "calibration_missing": missing,
        }
        tell_missing(path, missing)
        self._container: Any = None
        self._frames: Iterator[Any] | None = None  # av.VideoFrame, decoded in order
        self._to_grey: Any = None  # av.video.reformatter.VideoReformatter, one scaler context per file
        self._next = 0

    def _restart(self) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self.close()
        self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        # FFmpeg decodes several frames at once on several cores (frame threads, and slice threads where the
        # codec has slices): replay reads in order, so frames decoded ahead are never wasted
        stream.thread_type = "AUTO"
        self._frames = iter(self._container.decode(stream))
        self._to_grey = VideoReformatter()
        self._next = 0

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} of {self.n_frames}")
        if self._frames is None or i < self._next:
            self._restart()
        assert self._frames is not None
        try:
            while self._next < i:  # skip forward (decoding: codecs depend on earlier frames)
                next(self._frames)
                self._next += 1
            pixels = self._grey(next(self._frames))
        except StopIteration:
            raise ReplayError(f"{self.path}: the video ends before frame {i} "
                              f"(its header announced {self.n_frames})") from None
        except Exception as exc:  # a damaged packet: FFmpeg errors come through PyAV as many types
            self._frames = None  # restart at the next call
            raise ReplayError(f"{self.path}: frame {i} cannot be decoded ({type(exc).__name__}: {exc})") from None
        self._next += 1
        if pixels.shape != self.shape:
            raise ReplayError(f"{self.path}: frame {i} is {pixels.shape}, expected {self.shape}")
        return pixels

    def _grey(self, frame: Any) -> np.ndarray:
        """The frame as C-contiguous 8-bit grey (luma): FFmpeg's conversion, as ``to_ndarray(format="gray")``."""
        plane = self._to_grey.reformat(frame, format="gray").planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        # FFmpeg pads rows to its alignment; unpadded rows are the frame as it stands (the array holds the buffer)
        return rows if plane.line_size == plane.width else np.ascontiguousarray(rows[:, : plane.width])

    def close(self) -> None:
        self._frames = None
        self._to_grey = None
        if self._container is not None:
            self._container.close()
            self._container = None
