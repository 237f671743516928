"""Video exports (MP4, AVI, MOV, MKV) through imageio's PyAV plugin (FFmpeg's decoders).

Frames are decoded one at a time, straight to 8-bit grey (FFmpeg converts the luma plane), in order:
replay reads a recording from its first frame to its last, so the reader keeps one open decoder and
restarts it only when asked for a frame out of order (a loop back to frame 0). Memory stays one frame.

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
        self._file: Any = None
        self._frames: Iterator[np.ndarray] | None = None
        self._next = 0

    def _restart(self) -> None:
        import imageio.v3 as iio

        self.close()
        self._file = iio.imopen(self.path, "r", plugin="pyav")
        # FFmpeg decodes several frames at once on several cores (frame threads): replay reads in order
        self._frames = self._file.iter(format="gray", thread_type="FRAME")
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
            pixels = next(self._frames)
        except StopIteration:
            raise ReplayError(f"{self.path}: the video ends before frame {i} "
                              f"(its header announced {self.n_frames})") from None
        except Exception as exc:  # a damaged packet: FFmpeg errors come through PyAV as many types
            self._frames = None  # restart at the next call
            raise ReplayError(f"{self.path}: frame {i} cannot be decoded ({type(exc).__name__}: {exc})") from None
        self._next += 1
        if pixels.shape != self.shape:
            raise ReplayError(f"{self.path}: frame {i} is {pixels.shape}, expected {self.shape}")
        return np.ascontiguousarray(pixels, dtype=np.uint8)

    def close(self) -> None:
        self._frames = None
        if self._file is not None:
            self._file.close()
            self._file = None
