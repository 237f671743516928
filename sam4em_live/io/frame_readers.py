"""Random-access frame readers behind `ReplaySource`: the shared parts and JPEG/PNG folders.

A reader opens one recording, checks it once (2-D grey frames of one size),
and then hands out frame ``i`` as a 2-D array in a wire dtype (see
`sam4em_live.frames.SUPPORTED_DTYPES`). TIFF stacks live in
`sam4em_live.io.tiff_io`; this module holds the error type, the grey
reduction and the image-folder reader (SAM4EM's ``000000.jpeg`` layout).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from sam4em_live.frames import SUPPORTED_DTYPES, Calibration

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_TRAILING_INT = re.compile(r"(\d+)$")

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


def numbered_image_files(folder: Path) -> list[Path]:
    """JPEG/PNG files of ``folder`` in numeric order of the integer ending their stem.

    ``2.jpg`` comes before ``10.jpg`` (numeric, not lexical). Files without a
    number, or two files with the same number, are errors naming them.
    """
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ReplayError(f"{folder}: no JPEG/PNG frames in this folder (expected 000000.jpeg, 000001.jpeg, ...)")
    numbered: dict[int, Path] = {}
    for p in files:
        match = _TRAILING_INT.search(p.stem)
        if match is None:
            raise ReplayError(f"{folder}: frame file {p.name!r} has no frame number in its name")
        number = int(match.group(1))
        if number in numbered:
            raise ReplayError(f"{folder}: {numbered[number].name!r} and {p.name!r} have the same frame number")
        numbered[number] = p
    return [numbered[k] for k in sorted(numbered)]


class ImageFolderReader:
    """Frames from a folder of JPEG/PNG files, one frame per file (SAM4EM layout).

    Every file header is read at open so a folder with frames of different
    sizes fails before streaming starts. Pixels are decoded on each `read`.
    Image files carry no calibration we trust, so ``calibration`` is empty.
    """

    def __init__(self, folder: Path) -> None:
        from PIL import Image

        self.path = folder
        self.files = numbered_image_files(folder)
        self.n_frames = len(self.files)
        sizes: dict[tuple[int, int], str] = {}
        for p in self.files:
            try:
                with Image.open(p) as im:
                    sizes.setdefault((im.height, im.width), p.name)
            except (OSError, SyntaxError, ValueError) as exc:  # Pillow raises all three for bad files
                raise ReplayError(f"{p}: not a readable image ({exc})") from None
            if len(sizes) > 1:
                raise ReplayError(f"{folder}: mixed frame sizes: " + ", ".join(
                    f"{name} is {w}x{h}" for (h, w), name in sizes.items()))
        (self.shape,) = sizes
        self._grey = GreyReducer(folder)
        first = self._decode(0)
        self.dtype = first.dtype.str
        self.calibration = Calibration()
        self.metadata = {"format": "image-folder", "first_file": self.files[0].name,
                         "last_file": self.files[-1].name, "memory_mapped": False}

    def _decode(self, i: int) -> np.ndarray:
        from PIL import Image

        path = self.files[i]
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB") if im.mode == "P" else im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ReplayError(f"{path}: cannot decode image ({exc})") from None
        pixels = self._grey(pixels)
        if pixels.shape != self.shape:
            raise ReplayError(f"{path}: frame is {pixels.shape[1]}x{pixels.shape[0]}, "
                              f"expected {self.shape[1]}x{self.shape[0]}")
        return np.ascontiguousarray(pixels, dtype=wire_dtype(pixels.dtype, path))

    def read(self, i: int) -> np.ndarray:
        pixels = self._decode(i)
        if pixels.dtype.str != self.dtype:
            raise ReplayError(f"{self.files[i]}: pixel type {pixels.dtype} differs from the first frame's {self.dtype}")
        return pixels

    def close(self) -> None:
        pass
