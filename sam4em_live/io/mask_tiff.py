"""The recorder's ``masks.tif``: a uint16 label stack written one page per frame.

Each page is a (rows, columns) uint16 image whose value is the particle id
(0 = background), stored as 128 x 128 deflate-compressed tiles, with the frame
index in the page's ImageDescription as JSON (``{"frame": 17}``). The file is
BigTIFF (no 4 GiB limit) without a shaped/ImageJ description, so every page
belongs to one uniform series and any TIFF reader (tifffile, napari, Fiji via
Bio-Formats) sees a (pages, rows, columns) stack.

Speed: most of a label page is background, so the writer compresses only the
tiles that contain a particle (with zlib-ng, about twice as fast as zlib) and
points all other tiles at one shared compressed empty tile. The pages are
written by `sam4em_live.io.bigtiff_pages` rather than tifffile, whose
per-page and per-tile Python cost was most of the ~1 ms per 1024² page
(figures in docs/benchmarks.md, from `python -m tools.bench run recorder`). Files written
earlier by tifffile read the same way.

Crash safety: the writer only pushes bytes to the OS in `LabelStackWriter.flush`
(called at least once a second; or when 8 MiB are pending), and links each page
into the file only after its bytes are written. If the process dies, the pages
flushed so far are readable; `read_label_stack` also skips a last page that was
cut short (a file truncated at any byte gives every complete page before the cut).
A write the OS refuses (disk full) cuts the file back to its last complete page
and stops the writer (`bigtiff_pages`). `complete_page_frames` lists the frames of
the complete pages without decoding them; `end_at_last_complete_page` cuts a file
whose writer died back to those pages, so that any TIFF reader takes it.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import imagecodecs
import numpy as np
import tifffile

from sam4em_live.io.bigtiff_pages import BigTiffPageWriter
from sam4em_live.io.label_stack_layout import is_imagej, page_frame, page_origin, with_page_count

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sam4em_live.io.label_stack_layout import LabelStackLayout
    from sam4em_live.particles import ParticleMask

log = logging.getLogger(__name__)

#: Deflate (zlib) level for mask tiles: 1 is the fastest. CPU is scarcer than disk here: with zlib-ng, level 1
#: takes ~8 us per 128² tile vs ~13 us at level 2, for ~6 KiB vs ~3 KiB per 1024² page with four particles
#: (the `recorder` benchmark; the older zlib writer wrote ~13 KiB per page at level 1).
MASK_COMPRESSION_LEVEL = 1
TILE_PX = 128
MAX_LABEL = int(np.iinfo(np.uint16).max)


def _deflate_encoder(level: int) -> Callable[[np.ndarray], bytes]:
    """A function compressing a tile to a zlib stream (TIFF compression 8): zlib-ng if imagecodecs has it."""
    if imagecodecs.ZLIBNG.available:
        # imagecodecs' stub types the input as bytes/bytearray/mmap and the result as bytes | bytearray: it takes
        # any buffer (here a C-contiguous array) and returns bytes unless ``out=`` is given.
        return lambda tile: imagecodecs.zlibng_encode(tile, level=level)  # type: ignore[arg-type, return-value]
    return lambda tile: zlib.compress(tile.tobytes(), level)


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
    """Append uint16 label pages to a new BigTIFF file (see module docstring).

    Parameters
    ----------
    path
        The file to create; an existing file is never overwritten.
    compression_level
        Deflate level, 1 (fastest) to 9.
    layout
        None: one page per `append` call, each described ``{"frame": n}``. A `LabelStackLayout` (the
        recorder's): one page per frame index from `page_origin` of the first frame on, frames without a
        page of their own getting an empty one (frames must then increase), the pixel size in the
        resolution tags and an ImageJ hyperstack description on the first page whose page count is kept
        current at every `flush` (`io.label_stack_layout`).
    """

    def __init__(self, path: Path, compression_level: int = MASK_COMPRESSION_LEVEL,
                 layout: LabelStackLayout | None = None) -> None:
        self.path = path
        self.compression_level = compression_level
        self.layout = layout
        #: Frame of page 0 and of the next page (layout only; None until the first page).
        self.first_frame: int | None = None
        self._next_frame: int | None = None
        self._encode = _deflate_encoder(compression_level)
        self._empty_tile = self._encode(np.zeros((TILE_PX, TILE_PX), np.uint16))
        self._canvas = np.zeros((0, 0), np.uint16)
        # "xb": never overwrite an existing file.
        fh = open(path, "xb+")  # noqa: SIM115 - owned and closed by the page writer
        resolution = layout.resolution if layout is not None else (1, 1)
        self._pages = BigTiffPageWriter(fh, self._empty_tile, TILE_PX, resolution)
        # The header goes out now: from here on the file is a valid TIFF (of no pages yet) at every moment.
        try:
            self._pages.flush()
        except OSError:
            self._pages.close()
            path.unlink(missing_ok=True)  # a file that never held a page is no part of the run
            raise

    @property
    def pages(self) -> int:
        """Pages appended so far (still valid after `close`)."""
        return self._pages.pages

    @property
    def pages_on_disk(self) -> int:
        """Pages whose bytes are in the file (flushed; after a refused write, the ones the file kept)."""
        return self._pages.pages_on_disk

    def _page_writer(self) -> BigTiffPageWriter:
        if self._pages.closed:
            raise ValueError(f"{self.path}: label stack already closed")
        return self._pages

    def append(self, labels: np.ndarray, frame_index: int) -> None:
        """Append a whole (rows, columns) uint16 label image as the page of ``frame_index``."""
        writer = self._page_writer()
        if labels.dtype != np.uint16 or labels.ndim != 2:
            raise ValueError(f"label pages must be 2-D uint16, got {labels.ndim}-D {labels.dtype}")
        rows, cols = labels.shape
        tiles_across = -(-cols // TILE_PX)
        tiles: dict[int, bytes] = {}
        for y in range(0, rows, TILE_PX):
            for x in range(0, cols, TILE_PX):
                tile = labels[y : y + TILE_PX, x : x + TILE_PX]
                if tile.any():  # empty tiles are the shared one
                    padded = np.zeros((TILE_PX, TILE_PX), np.uint16)  # edge tiles are padded to full size
                    padded[: tile.shape[0], : tile.shape[1]] = tile
                    tiles[(y // TILE_PX) * tiles_across + x // TILE_PX] = self._encode(padded)
        self._fill_to(frame_index, (rows, cols))
        writer.append_page((rows, cols), tiles, self._description(frame_index))

    def _fill_to(self, frame_index: int, shape: tuple[int, int]) -> None:
        """With a layout: empty pages for the frames before ``frame_index`` that have none (module docstring)."""
        if self.layout is None:
            return
        if self._next_frame is None:
            self.first_frame = self._next_frame = page_origin(frame_index)
        if frame_index < self._next_frame:
            raise ValueError(f"{self.path}: frame {frame_index} after frame {self._next_frame - 1}; "
                             "pages are one per frame in increasing order")
        for frame in range(self._next_frame, frame_index):
            self._pages.append_page(shape, {}, self._description(frame))
        self._next_frame = frame_index + 1

    def _description(self, frame_index: int) -> str:
        if self.layout is not None and self._pages.pages == 0:
            return self.layout.imagej_description(1, frame_index)
        return _description(frame_index)

    def append_masks(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> int:
        """Append the page `draw_labels` would paint, compressing only the tiles that masks touch.

        Same bytes as ``append(draw_labels(shape, masks)[0], frame_index)`` without
        painting (and scanning) a whole frame. Returns the number of masks skipped.
        """
        writer = self._page_writer()
        drawable, skipped = _drawable(shape, masks)
        canvas = self._zeroed_canvas(shape)
        tiles_across = canvas.shape[1] // TILE_PX
        touched: set[int] = set()
        tiles: dict[int, bytes] = {}
        try:
            for mask in drawable:  # painted in order: later masks win, as in draw_labels
                x0, y0, x1, y1 = mask.bbox  # type: ignore[misc]
                np.copyto(canvas[y0:y1, x0:x1], mask.particle, where=mask.crop)
                first, last = x0 // TILE_PX, (x1 - 1) // TILE_PX
                for ty in range(y0 // TILE_PX, (y1 - 1) // TILE_PX + 1):
                    touched.update(range(ty * tiles_across + first, ty * tiles_across + last + 1))
            for index in touched:
                top, left = (TILE_PX * i for i in divmod(index, tiles_across))
                data = self._encode(np.ascontiguousarray(canvas[top : top + TILE_PX, left : left + TILE_PX]))
                # A box can touch a tile its mask does not reach: an all-zero tile compresses to exactly
                # the shared empty tile's bytes (same encoder, same level), which is cheaper to test than the pixels.
                if data != self._empty_tile:
                    tiles[index] = data
        finally:
            for mask in drawable:  # back to background for the next page
                x0, y0, x1, y1 = mask.bbox  # type: ignore[misc]
                canvas[y0:y1, x0:x1] = 0
        self._fill_to(frame_index, (int(shape[0]), int(shape[1])))
        writer.append_page((int(shape[0]), int(shape[1])), tiles, self._description(frame_index))
        return skipped

    def _zeroed_canvas(self, shape: tuple[int, int]) -> np.ndarray:
        """An all-zero uint16 page padded to whole tiles, kept between pages (callers zero what they paint)."""
        padded = (-(-shape[0] // TILE_PX) * TILE_PX, -(-shape[1] // TILE_PX) * TILE_PX)
        if self._canvas.shape != padded:
            self._canvas = np.zeros(padded, np.uint16)
        return self._canvas

    def flush(self, fsync: bool = False) -> None:
        """Push the pages appended so far to the OS (and to the disk with ``fsync``).

        With a layout the ImageJ page count is rewritten too, after the pages it counts are linked.
        """
        if self.layout is not None and self.first_frame is not None and not self._pages.closed:
            description = self.layout.imagej_description(self._pages.pages, self.first_frame)
            self._pages.rewrite_first_description(description)
        self._pages.flush(fsync)

    def close(self) -> None:
        """Write everything, fsync and close the file. Idempotent."""
        if self.layout is not None and self.first_frame is not None and not self._pages.closed \
                and self._pages.broken is None:
            self._pages.rewrite_first_description(self.layout.imagej_description(self._pages.pages, self.first_frame))
        self._pages.close()


def _description(frame_index: int) -> str:
    return json.dumps({"frame": int(frame_index)})


def read_label_stack(path: str | Path) -> tuple[np.ndarray, list[int]]:
    """Read a ``masks.tif`` (even one cut short by a crash): (pages, rows, columns) uint16 and frame indices.

    A page counts only if all its bytes are in the file: its IFD (up to and
    including the next-IFD offset), the values its tags point at, and its tile
    data (shared tiles included). The first page that is incomplete or fails
    to decode ends the read: everything before it is returned. Reads files
    written by this module and the earlier tifffile-written ones alike.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if not _BIGTIFF_HEADER.startswith(fh.read(len(_BIGTIFF_HEADER))):
            raise ValueError(f"{path}: not a little-endian BigTIFF label stack")
    pages: list[np.ndarray] = []
    frames: list[int] = []
    try:
        tif = tifffile.TiffFile(path) if size >= _BIGTIFF_HEADER_BYTES else None
    except tifffile.TiffFileError as exc:  # tifffile reads the first IFD on open: it was cut short
        log.warning("%s: first page has a damaged header (%s)", path, exc)
        tif = None
    if tif is None:
        log.warning("%s: cut short (%d bytes) before its first page was complete", path, size)
        return np.zeros((0, 0, 0), dtype=np.uint16), []
    with tif:
        while True:
            try:
                page = tif.pages[len(pages)]
            except IndexError:
                break
            except tifffile.TiffFileError as exc:  # the last IFD itself was cut short
                log.warning("%s: page %d has a damaged header (%s); stopping there", path, len(pages), exc)
                break
            assert isinstance(page, tifffile.TiffPage)  # a TiffFrame only where pages.useframes was set
            if not _page_is_complete(tif, page, size):
                log.warning("%s: page %d is incomplete (written when the process stopped); ignored", path, len(pages))
                break
            try:
                pages.append(page.asarray())
                frames.append(page_frame(page.description))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: page %d unreadable (%s); stopping there", path, len(pages), exc)
                break
    if not pages:
        return np.zeros((0, 0, 0), dtype=np.uint16), []
    return np.stack(pages), frames


_BIGTIFF_HEADER = b"II+\x00\x08\x00\x00\x00"  # the first 8 of its 16 bytes; then the first IFD's offset
_BIGTIFF_HEADER_BYTES = 16


def _page_is_complete(tif: tifffile.TiffFile, page: tifffile.TiffPage, size: int) -> bool:
    """Whether every byte of ``page`` (IFD, tag values, tile data) lies within the first ``size`` bytes."""
    ifd_end = page.offset + tif.tiff.tagnosize + len(page.tags) * tif.tiff.tagsize + tif.tiff.offsetsize
    values_end = max(tag.valueoffset + tag.valuebytecount for tag in page.tags.values())
    counts, offsets = page.databytecounts, page.dataoffsets
    if not counts or min(counts) == 0 or len(counts) != len(offsets):
        return False
    return max(ifd_end, values_end, max(o + c for o, c in zip(offsets, counts, strict=True))) <= size


def _complete_pages(path: Path) -> tuple[list[int], int, int]:
    """Frames of the complete pages of ``path``, the file end after the last one, and its next-IFD field.

    Stops at the first page that is incomplete or whose description is not ours, as `read_label_stack`
    does, without decoding any tile. Returns ``([], header end, first-IFD field)`` for a stack without pages.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(_BIGTIFF_HEADER_BYTES)
    if not _BIGTIFF_HEADER.startswith(head[: len(_BIGTIFF_HEADER)]) or len(head) < _BIGTIFF_HEADER_BYTES:
        raise ValueError(f"{path}: not a little-endian BigTIFF label stack")
    frames: list[int] = []
    end, next_field = _BIGTIFF_HEADER_BYTES, len(_BIGTIFF_HEADER)
    try:
        tif = tifffile.TiffFile(path)
    except tifffile.TiffFileError:  # the first IFD was cut short
        return frames, end, next_field
    with tif:
        while True:
            try:
                page = tif.pages[len(frames)]
            except (IndexError, tifffile.TiffFileError):
                break
            if not isinstance(page, tifffile.TiffPage) or not _page_is_complete(tif, page, size):
                break
            try:
                frame = page_frame(page.description)
            except (ValueError, KeyError, TypeError):
                break
            frames.append(frame)
            ifd_end = page.offset + tif.tiff.tagnosize + len(page.tags) * tif.tiff.tagsize + tif.tiff.offsetsize
            end = max(ifd_end, max(t.valueoffset + t.valuebytecount for t in page.tags.values()),
                      max(o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)))
            next_field = ifd_end - tif.tiff.offsetsize
    return frames, end, next_field


def complete_page_frames(path: str | Path) -> list[int]:
    """The frame index of every complete page of a ``masks.tif`` (even one cut short), without decoding tiles.

    Raises ValueError for a file that is not a BigTIFF label stack.
    """
    return _complete_pages(Path(path))[0]


def end_at_last_complete_page(path: str | Path) -> list[int]:
    """Cut a ``masks.tif`` whose writer died back to its complete pages; returns their frame indices.

    The file then ends right after its last complete page, whose next-IFD pointer is zero, so every
    TIFF reader (not only `read_label_stack`) takes it. Call it only when no writer has the file open.
    """
    path = Path(path)
    frames, end, next_field = _complete_pages(path)
    count = _first_description_count(path, len(frames)) if frames else None
    with open(path, "r+b") as fh:
        fh.seek(next_field)
        fh.write(b"\0" * 8)
        fh.truncate(end)
        if count is not None:  # an ImageJ page count that says what the file now holds
            fh.seek(count[0])
            fh.write(count[1])
        fh.flush()
        os.fsync(fh.fileno())
    return frames


def _first_description_count(path: Path, pages: int) -> tuple[int, bytes] | None:
    """(offset, bytes) that make the first page's ImageJ description count ``pages``; None if not ImageJ."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags.get(270)
        if tag is None or tag.valuebytecount <= 8:
            return None
        offset, size = tag.valueoffset, tag.valuebytecount
    with open(path, "rb") as fh:  # the stored bytes: tifffile's string may be stripped
        fh.seek(offset)
        raw = fh.read(size)
    text = raw.rstrip(b"\0").decode("ascii", "replace")
    if not is_imagej(text):
        return None
    return offset, with_page_count(text, pages).encode("ascii")
