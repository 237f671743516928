"""The recorder's ``masks.tif``: a uint16 label stack written one page per frame.

Each page is a (rows, columns) uint16 image whose value is the particle id
(0 = background), stored as 128 x 128 deflate-compressed tiles, with the frame
index in the page's ImageDescription as JSON (``{"frame": 17}``). The file is
BigTIFF (no 4 GiB limit) without a shaped/ImageJ description, so every page
belongs to one uniform series and any TIFF reader (tifffile, napari, Fiji via
Bio-Formats) sees a (pages, rows, columns) stack.

Speed: most of a label page is background, so the writer compresses only the
tiles that contain a particle and reuses the pre-compressed bytes of an empty
tile for the rest (about 5x faster than compressing whole 1024² pages; figures
in docs/benchmarks.md, from tools/bench_recorder.py).

Crash safety: the writer only pushes bytes to the OS in `LabelStackWriter.flush`
(called at least once a second) and its buffer is large enough that tifffile's
writes in between stay in memory. If the process dies, the pages flushed so far
are readable; `read_label_stack` skips a last page whose data never reached
the disk.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from sam4em_live.segment.base import ParticleMask

log = logging.getLogger(__name__)

#: Deflate (zlib) level for mask tiles: 1 is the fastest (CPU is scarcer than disk here; pages are
#: ~13 KiB at level 1 vs ~5 KiB at level 6 for five particles, see tools/bench_recorder.py).
MASK_COMPRESSION_LEVEL = 1
TILE_PX = 128
_BUFFER_BYTES = 8 << 20
MAX_LABEL = int(np.iinfo(np.uint16).max)


def draw_labels(shape: tuple[int, int], masks: Sequence[ParticleMask], out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Paint present masks into a uint16 label image (value = particle id).

    Where masks overlap the later particle in ``masks`` wins. Returns the
    image and the number of masks that could not be drawn (id above 65535,
    crop not matching its bbox, bbox outside the frame).
    """
    labels = np.zeros(shape, dtype=np.uint16) if out is None else out
    if out is not None:
        labels.fill(0)
    drawable, skipped = _drawable(shape, masks)
    for mask in drawable:
        x0, y0, x1, y1 = mask.bbox  # type: ignore[misc]
        labels[y0:y1, x0:x1][mask.crop] = mask.particle
    return labels, skipped


def _drawable(shape: tuple[int, int], masks: Sequence[ParticleMask]) -> tuple[list[ParticleMask], int]:
    """Present masks that can be painted, in order, and how many present ones cannot."""
    drawable: list[ParticleMask] = []
    skipped = 0
    for mask in masks:
        if not mask.present or mask.crop is None or mask.bbox is None:
            continue
        x0, y0, x1, y1 = mask.bbox
        inside = 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
        if not (1 <= mask.particle <= MAX_LABEL) or not inside or mask.crop.shape != (y1 - y0, x1 - x0):
            skipped += 1
            continue
        drawable.append(mask)
    return drawable, skipped


class LabelStackWriter:
    """Append uint16 label pages to a BigTIFF file (see module docstring)."""

    def __init__(self, path: Path, compression_level: int = MASK_COMPRESSION_LEVEL) -> None:
        self.path = path
        self.compression_level = compression_level
        self.pages = 0
        self._empty_tile = imagecodecs.zlib_encode(np.zeros((TILE_PX, TILE_PX), np.uint16), level=compression_level)
        # "xb": never overwrite an existing file.
        self._fh: io.BufferedRandom | None = open(path, "xb+", buffering=_BUFFER_BYTES)  # noqa: SIM115
        try:
            self._tiff: tifffile.TiffWriter | None = tifffile.TiffWriter(self._fh, bigtiff=True)
        except BaseException:
            self._fh.close()
            raise

    def append(self, labels: np.ndarray, frame_index: int) -> None:
        if self._tiff is None:
            raise ValueError(f"{self.path}: label stack already closed")
        if labels.dtype != np.uint16 or labels.ndim != 2:
            raise ValueError(f"label pages must be 2-D uint16, got {labels.ndim}-D {labels.dtype}")
        self._tiff.write(
            self._encoded_tiles(labels), shape=labels.shape, dtype=np.uint16, tile=(TILE_PX, TILE_PX),
            photometric="minisblack", compression="zlib",
            description=json.dumps({"frame": int(frame_index)}), metadata=None,
        )
        self.pages += 1

    def append_masks(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> int:
        """Append the page `draw_labels` would paint, building only the tiles that masks touch.

        Same bytes as ``append(draw_labels(shape, masks)[0], frame_index)`` without
        painting (and scanning) a whole frame. Returns the number of masks skipped.
        """
        if self._tiff is None:
            raise ValueError(f"{self.path}: label stack already closed")
        drawable, skipped = _drawable(shape, masks)
        touched: dict[tuple[int, int], list[ParticleMask]] = {}
        for mask in drawable:
            x0, y0, x1, y1 = mask.bbox  # type: ignore[misc]
            for ty in range(y0 // TILE_PX, (y1 - 1) // TILE_PX + 1):
                for tx in range(x0 // TILE_PX, (x1 - 1) // TILE_PX + 1):
                    touched.setdefault((ty, tx), []).append(mask)
        self._tiff.write(
            self._sparse_tiles(shape, touched), shape=shape, dtype=np.uint16, tile=(TILE_PX, TILE_PX),
            photometric="minisblack", compression="zlib",
            description=json.dumps({"frame": int(frame_index)}), metadata=None,
        )
        self.pages += 1
        return skipped

    def _sparse_tiles(self, shape: tuple[int, int], touched: dict[tuple[int, int], list[ParticleMask]]
                      ) -> Iterator[bytes]:
        tile = np.zeros((TILE_PX, TILE_PX), np.uint16)
        for ty in range(-(-shape[0] // TILE_PX)):
            for tx in range(-(-shape[1] // TILE_PX)):
                masks = touched.get((ty, tx))
                if not masks:
                    yield self._empty_tile
                    continue
                tile.fill(0)
                top, left = ty * TILE_PX, tx * TILE_PX
                for mask in masks:  # later masks win, as in draw_labels
                    x0, y0, x1, y1 = mask.bbox  # type: ignore[misc]
                    ya, yb, xa, xb = max(y0, top), min(y1, top + TILE_PX), max(x0, left), min(x1, left + TILE_PX)
                    crop = mask.crop[ya - y0 : yb - y0, xa - x0 : xb - x0]  # type: ignore[index]
                    tile[ya - top : yb - top, xa - left : xb - left][crop] = mask.particle
                yield self._empty_tile if not tile.any() else imagecodecs.zlib_encode(tile, level=self.compression_level)

    def _encoded_tiles(self, labels: np.ndarray) -> Iterator[bytes]:
        """Deflate-encoded tiles in TIFF order (row-major); empty tiles reuse cached bytes."""
        rows, cols = labels.shape
        for y in range(0, rows, TILE_PX):
            for x in range(0, cols, TILE_PX):
                tile = labels[y : y + TILE_PX, x : x + TILE_PX]
                if not tile.any():
                    yield self._empty_tile
                    continue
                if tile.shape != (TILE_PX, TILE_PX):  # edge tiles are padded to full size
                    tile = np.pad(tile, ((0, TILE_PX - tile.shape[0]), (0, TILE_PX - tile.shape[1])))
                yield imagecodecs.zlib_encode(np.ascontiguousarray(tile), level=self.compression_level)

    def flush(self, fsync: bool = False) -> None:
        if self._fh is not None:
            self._fh.flush()
            if fsync:
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        tiff, self._tiff = self._tiff, None
        fh, self._fh = self._fh, None
        try:
            if tiff is not None:
                tiff.close()
        finally:
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()


def read_label_stack(path: str | Path) -> tuple[np.ndarray, list[int]]:
    """Read a ``masks.tif`` (even one cut short by a crash): (pages, rows, columns) uint16 and frame indices.

    Pages whose data lies (partly) beyond the end of the file, or that fail
    to decode, end the read: everything before them is returned.
    """
    path = Path(path)
    size = path.stat().st_size
    pages: list[np.ndarray] = []
    frames: list[int] = []
    with tifffile.TiffFile(path) as tif:
        while True:
            try:
                page = tif.pages[len(pages)]
            except IndexError:
                break
            except tifffile.TiffFileError as exc:  # the last IFD itself was cut short
                log.warning("%s: page %d has a damaged header (%s); stopping there", path, len(pages), exc)
                break
            counts, offsets = page.databytecounts, page.dataoffsets
            if not counts or min(counts) == 0 or max(o + c for o, c in zip(offsets, counts, strict=True)) > size:
                log.warning("%s: page %d is incomplete (written when the process stopped); ignored", path, len(pages))
                break
            try:
                pages.append(page.asarray())
                frames.append(int(json.loads(page.description)["frame"]))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: page %d unreadable (%s); stopping there", path, len(pages), exc)
                break
    if not pages:
        return np.zeros((0, 0, 0), dtype=np.uint16), []
    return np.stack(pages), frames
