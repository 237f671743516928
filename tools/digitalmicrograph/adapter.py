"""The seam between the publisher and a live view: `LiveView`, and `FileLiveView` (a recording played as one).

A live view is an image that a camera overwrites in place at its own rate; the publisher looks at it
whenever it can. ``grab()`` returns what the view shows *now* (a `LiveFrame`), or None while it has shown
nothing yet. ``frame_number`` counts the camera's frames when the view knows it (so frames the publisher
was too slow to see become gaps downstream); else None, and the publisher tells new frames from old by
their pixels. Plain Python 3.7 (DigitalMicrograph's Python): no ``sam4em_live`` imports.
"""

from __future__ import annotations

import time

import numpy as np

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover - DigitalMicrograph's Python 3.7
    Protocol = object  # type: ignore[assignment,misc]

#: Length units DigitalMicrograph writes on calibrated axes, in nanometres.
UNIT_NM = {"nm": 1.0, "µm": 1000.0, "um": 1000.0, "\u03bcm": 1000.0, "mm": 1e6, "m": 1e9,
           "a": 0.1, "å": 0.1, "\u212b": 0.1, "pm": 1e-3}


def pixel_size_nm(scale: float, unit: str) -> float | None:
    """A calibrated axis' scale (``unit`` per pixel) in nm; None for uncalibrated or non-length axes (1/nm...)."""
    factor = UNIT_NM.get(unit.strip().lower()) if unit else None
    if factor is None or not scale or scale <= 0:
        return None
    return float(scale) * factor


class LiveFrame:
    """What a live view shows: ``pixels`` (rows, columns; the publisher copies before sending), when it was
    acquired (``timestamp_s``, Unix seconds), and its calibration (None = unknown)."""

    __slots__ = ("exposure_s", "fps", "frame_number", "pixel_size_nm", "pixels", "timestamp_s")

    def __init__(self, pixels: np.ndarray, timestamp_s: float, frame_number: int | None = None,
                 pixel_size_nm: float | None = None, exposure_s: float | None = None,
                 fps: float | None = None) -> None:
        self.pixels = pixels
        self.timestamp_s = timestamp_s
        self.frame_number = frame_number
        self.pixel_size_nm = pixel_size_nm
        self.exposure_s = exposure_s
        self.fps = fps


class LiveView(Protocol):
    """A live image: ``name`` (the camera / image, for the series metadata), ``grab()``, ``close()``."""

    name: str

    def grab(self) -> LiveFrame | None: ...

    def close(self) -> None: ...


class FileLiveView:
    """A recording (TIFF stack or ``.npy``) shown as a live view at ``fps``: ``grab()`` returns the frame the
    "camera" is on at the time of the call, as DigitalMicrograph's live image would. Frames the caller
    was too slow to look at are skipped (their numbers are gaps). The recording loops unless ``loop=False``,
    after which ``grab()`` keeps returning the last frame.
    """

    def __init__(self, path: str, fps: float = 25.0, pixel_size_nm: float | None = None,
                 exposure_s: float | None = None, loop: bool = True) -> None:
        if str(path).endswith(".npy"):
            self._stack = np.load(path, mmap_mode="r")
        else:
            import tifffile

            self._stack = tifffile.imread(path)
        if self._stack.ndim == 2:
            self._stack = self._stack[None]
        self.name = "file:" + str(path)
        self.fps = fps
        self.pixel_size_nm = pixel_size_nm
        self.exposure_s = exposure_s
        self.loop = loop
        self._t0: float | None = None

    @property
    def n_frames(self) -> int:
        return int(self._stack.shape[0])

    def grab(self) -> LiveFrame | None:
        now = time.time()
        if self._t0 is None:
            self._t0 = now
        number = int((now - self._t0) * self.fps)
        if not self.loop:
            number = min(number, self.n_frames - 1)
        pixels = np.asarray(self._stack[number % self.n_frames])
        return LiveFrame(pixels, self._t0 + number / self.fps, number, self.pixel_size_nm, self.exposure_s,
                         self.fps)

    def close(self) -> None:
        self._stack = self._stack[:0]
