"""Random-access frame readers behind `ReplaySource`: the seam and the parts every reader shares.

A reader opens one recording, checks it once (2-D grey frames of one size),
and then hands out frame ``i`` as a 2-D array in a wire dtype (see
`sam4em_live.frames.SUPPORTED_DTYPES`). This module holds the `FrameReader`
protocol, the error type, the wire dtype rule and the grey reduction; the
readers themselves are TIFF stacks (`tiff_io`), instrument files through
rosettasciio (`vendor_readers`), videos (`video_reader`), frame folders
(`frame_folder`) and Gatan in-situ trees (`insitu_folder`), found by
`reader_registry`. docs/formats.md lists them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from sam4em_live.frames import SUPPORTED_DTYPES, Calibration

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")

#: Casts for pixel types the wire protocol does not carry (lossless widenings only).
_WIDEN: dict[str, str] = {"|i1": "<i2", "<f2": "<f4", "|b1": "|u1"}

#: ITU-R BT.601 luma weights for (R, G, B).
_LUMA = np.array([0.299, 0.587, 0.114])


class ReplayError(ValueError):
    """A recording that cannot be replayed; the message names the path and the problem."""


@runtime_checkable
class FrameReader(Protocol):
    """Random access to the frames of one recording (used by `ReplaySource` only).

    Readers are found by file suffix through `sam4em_live.io.reader_registry`.

    ``shape`` is (rows, columns); ``dtype`` is a wire dtype string (``"<u2"``);
    ``calibration`` holds what the file's metadata says (``None`` fields = unknown);
    ``metadata`` is JSON-able and ends up in ``SeriesInfo.metadata``.
    ``read(i)`` returns frame ``i`` (0-based) as a 2-D array that the caller
    must not modify (it may be a read-only view of a memory map).
    """

    path: Path
    n_frames: int
    shape: tuple[int, int]
    dtype: str
    calibration: Calibration
    metadata: dict[str, Any]

    def read(self, i: int) -> np.ndarray: ...

    def close(self) -> None: ...


def wire_dtype(dtype: np.dtype, path: Path) -> np.dtype:
    """The wire dtype frames of ``dtype`` are sent as (byte order fixed, narrow types widened)."""
    little = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype)
    name = _WIDEN.get(little.str, little.str)
    if name not in SUPPORTED_DTYPES:
        raise ReplayError(f"{path}: pixel type {np.dtype(dtype)} is not supported "
                          f"(supported: {', '.join(SUPPORTED_DTYPES)})")
    return np.dtype(name)


class GreyReducer:
    """Turns (rows, columns, samples) frames into one grey channel.

    Grey frames stored as RGB (equal channels) keep their first channel exactly.
    Frames whose channels differ are reduced to BT.601 luminance, rounded back
    to the source dtype; this is logged once per recording because it means
    the input was not the grey data we expect from a TEM.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.luminance_frames = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.ndim == 2:
            return pixels
        if pixels.shape[-1] <= 2:  # grey, or grey + alpha
            return pixels[..., 0]
        colour = pixels[..., :3]  # an alpha channel carries no image information
        first = colour[..., 0]
        if all(np.array_equal(first, colour[..., c]) for c in range(1, colour.shape[-1])):
            return first
        if self.luminance_frames == 0:
            log.warning("%s: colour channels differ; replaying BT.601 luminance of the RGB frames", self.path)
        self.luminance_frames += 1
        grey = colour.astype(np.float64) @ _LUMA
        if np.issubdtype(pixels.dtype, np.integer):
            info = np.iinfo(pixels.dtype)
            grey = np.clip(np.rint(grey), info.min, info.max)
        return grey.astype(pixels.dtype)
