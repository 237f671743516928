"""Frames that are files of one layout, read as memory-mapped views at the first file's image offset.

A recording saved one file per frame (a Gatan in-situ tree, a folder of DigitalMicrograph or TIFF frames)
is written by one program with the same tags in every file, so every file holds its image at the same
byte offset. The maintained reader (rosettasciio for DigitalMicrograph, tifffile for TIFF) parses the
first file; `SiblingImageLayout` records where its image lies and the bytes just before it, and a sibling
file of the same size with the same bytes there is mapped at that offset instead of being parsed again
(parsing costs 0.3 ms per TIFF file and 10-15 ms per DigitalMicrograph file; mapping ~0.03 ms). A file
that differs in either way is read by the maintained reader (`frame_folder.decode_frame_file`).

Frames are read-only views of a memory map of their file (no copy: the consumer's first pass over the
pixels reads them from the page cache); the map is released when the last view of the frame is dropped,
so memory stays the frames in flight. The fast paths are tested against the maintained readers
(tests/test_instrument_formats.py). As for every memory-mapped stack (TIFF, MRC, DM4): the files are a
finished recording; one cut shorter while a frame of it is in use would fault (SIGBUS), so live folders
being written are read by `sources.watched_folder`, which decodes complete files instead.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

#: TIFF files whose header (everything before the image) is longer than this are parsed per file.
MAX_TIFF_HEADER_BYTES = 1 << 16


class MappedFrames:
    """Frames of one file at known byte offsets (HDF5 chunks), as read-only views of one memory map."""

    def __init__(self, path: Path | str, offsets: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> None:
        with open(path, "rb") as f:
            self._map: mmap.mmap | None = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._offsets = [int(k) for k in offsets]
        self._shape, self._dtype = shape, dtype
        self._count = shape[0] * shape[1]
        if any(k < 0 or k + self._count * dtype.itemsize > len(self._map) for k in self._offsets):
            raise ValueError(f"{path}: a frame lies beyond the end of the file")

    def __getitem__(self, i: int) -> np.ndarray:
        if self._map is None:
            raise ValueError("frames read after close()")
        return np.frombuffer(self._map, self._dtype, self._count, self._offsets[i]).reshape(self._shape)

    def close(self) -> None:
        # the map itself is unmapped when the last frame viewing it is dropped
        self._map = None


@dataclass(frozen=True, slots=True)
class SiblingImageLayout:
    """Where the one image of a frame file lies (as the maintained reader found it) and the bytes before it.

    ``signature`` is the ``len(signature)`` bytes just before ``offset``: a DigitalMicrograph file's data
    tag header (the tags before it differ per frame: time stamps), a TIFF file's whole header.
    """

    offset: int
    shape: tuple[int, int]
    dtype: np.dtype
    file_size: int
    signature: bytes

    def read(self, path: Path) -> np.ndarray | None:
        """The image of sibling ``path`` (a read-only mapped view) if its layout matches, else None."""
        with open(path, "rb") as f:
            fd = f.fileno()
            if os.fstat(fd).st_size != self.file_size:
                return None
            start = self.offset - len(self.signature)
            if os.pread(fd, len(self.signature), start) != self.signature:
                return None
            mapped = mmap.mmap(fd, self.file_size, access=mmap.ACCESS_READ)
        count = self.shape[0] * self.shape[1]
        return np.frombuffer(mapped, dtype=self.dtype, count=count, offset=self.offset).reshape(self.shape)


def tiff_image_layout(path: Path) -> SiblingImageLayout | None:
    """The layout of a one-page, uncompressed, contiguous 2-D TIFF whose image ends the file, else None.

    tifffile parses the file. The signature is the whole header (every byte before the image), so a
    sibling that matches it is the same file but for its pixels; one whose image does not end the file
    (an IFD after the image) or with a header over `MAX_TIFF_HEADER_BYTES` is parsed per file instead.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                return None
            page = tif.pages.first
            # contiguous: uncompressed, no predictor or fill order, whole bytes per sample, in one block
            if (not page.is_contiguous or page.ndim != 2 or page.samplesperpixel != 1 or page.compression != 1
                    or page.dtype is None):
                return None
            offset, nbytes = int(page.dataoffsets[0]), int(page.nbytes)
            shape = (int(page.shape[0]), int(page.shape[1]))
            dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
            size = os.fstat(tif.filehandle.fileno()).st_size
    except Exception:  # anything tifffile cannot parse takes the full path, which reports it
        return None
    if (offset + nbytes != size or nbytes != shape[0] * shape[1] * dtype.itemsize
            or not 0 < offset <= MAX_TIFF_HEADER_BYTES or dtype.byteorder == ">"):
        return None
    with open(path, "rb") as f:
        signature = f.read(offset)
    return SiblingImageLayout(offset, shape, dtype, size, signature)
