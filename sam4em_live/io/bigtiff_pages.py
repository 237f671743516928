"""A minimal append-only BigTIFF writer for tiled uint16 pages that share one empty-tile blob.

Why not tifffile: tifffile's page writer costs about 1 ms of Python per 1024²
page (64 tiles), although a label page is mostly background. This writer
stores only the tiles that hold something and points every other tile at ONE
pre-compressed empty tile written once per file; TIFF lets several tiles
reference the same bytes (TileOffsets/TileByteCounts are plain pointers), and
tifffile, libtiff and Bio-Formats decode such files as usual.

File layout (little-endian BigTIFF, TIFF 6.0 + BigTIFF extension)::

    header (16 B): "II", 43, 8, 0, offset of the first IFD (0 until a page exists)
    shared block:  the empty tile's compressed bytes, the Software string
    page 1:        its non-empty tiles, then its ImageDescription, TileOffsets
                   and TileByteCounts arrays, then its IFD (8-byte aligned)
    page 2: ...

Each page's IFD comes *after* everything it points at, and the pointer to it
(the header's first-IFD offset or the previous IFD's next-IFD offset) is
written only after the page itself (see `BigTiffPageWriter.flush`). So a file
cut at any byte holds a chain of complete pages, possibly followed by a
pointer past the end of the file, which readers treat as the end of the chain.

Tags per page, the ones tifffile writes for ``TiffWriter.write(..., tile=...,
photometric="minisblack", compression="zlib", metadata=None)`` plus an explicit
SampleFormat: ImageWidth, ImageLength, BitsPerSample=16, Compression=8 (Adobe
deflate, i.e. zlib streams), PhotometricInterpretation=1 (min-is-black),
ImageDescription, SamplesPerPixel=1, XResolution=YResolution (pixels per
unit, as a rational; 1/1 when the pixel size is unknown), ResolutionUnit=1 (none:
the unit is named by the ImageJ description, as ImageJ itself writes it),
Software, TileWidth, TileLength, TileOffsets, TileByteCounts, SampleFormat=1
(unsigned integer).

The first page's ImageDescription may be rewritten in place with text of the
same length (`BigTiffPageWriter.rewrite_first_description`): the recorder keeps
the page count of its ImageJ description current that way (`io.label_stack_layout`).
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

# TIFF field types (TIFF 6.0 section 2, BigTIFF adds LONG8 = 16).
_ASCII, _SHORT, _LONG, _RATIONAL, _LONG8 = 2, 3, 4, 5, 16
_HEADER = struct.Struct("<2sHHHQ")  # byte order, 43 (BigTIFF), offset size 8, 0, first IFD offset
_ENTRY = struct.Struct("<HHQ8s")  # tag code, field type, value count, value or offset to it
_FIRST_IFD_FIELD = 8  # file position of the header's first-IFD offset
#: Out-of-memory guard: pending bytes are written out once they exceed this, even between flushes.
MAX_PENDING_BYTES = 8 << 20
SOFTWARE = "sam4em-live"


def _align(position: int, to: int = 8) -> int:
    return -(-position // to) * to


def _inline(fmt: str, *values: int) -> bytes:
    """A value that fits the 8-byte entry field, left-justified and zero-padded (as the spec says)."""
    return struct.pack("<" + fmt, *values).ljust(8, b"\0")


class _PageTemplate:
    """Everything about a page of one shape that does not change from page to page."""

    def __init__(self, shape: tuple[int, int], tile_px: int, empty_offset: int, empty_size: int,
                 software_offset: int, software_count: int, resolution: tuple[int, int] = (1, 1)) -> None:
        rows, cols = shape
        self.tiles_across = -(-cols // tile_px)
        self.n_tiles = -(-rows // tile_px) * self.tiles_across
        self.empty_offsets = np.full(self.n_tiles, empty_offset, np.uint64)
        self.empty_counts = np.full(self.n_tiles, empty_size, np.uint32)
        # Sorted by tag code, as TIFF requires; None marks the per-page entries (filled in `page_ifd`).
        self.entries: list[bytes | None] = [
            _ENTRY.pack(256, _LONG, 1, _inline("I", cols)),  # ImageWidth
            _ENTRY.pack(257, _LONG, 1, _inline("I", rows)),  # ImageLength
            _ENTRY.pack(258, _SHORT, 1, _inline("H", 16)),  # BitsPerSample
            _ENTRY.pack(259, _SHORT, 1, _inline("H", 8)),  # Compression: Adobe deflate
            _ENTRY.pack(262, _SHORT, 1, _inline("H", 1)),  # PhotometricInterpretation: min-is-black
            None,  # 270 ImageDescription
            _ENTRY.pack(277, _SHORT, 1, _inline("H", 1)),  # SamplesPerPixel
            _ENTRY.pack(282, _RATIONAL, 1, _inline("II", *resolution)),  # XResolution (pixels per unit)
            _ENTRY.pack(283, _RATIONAL, 1, _inline("II", *resolution)),  # YResolution
            _ENTRY.pack(296, _SHORT, 1, _inline("H", 1)),  # ResolutionUnit: none
            _ENTRY.pack(305, _ASCII, software_count, _inline("Q", software_offset)),  # Software
            _ENTRY.pack(322, _LONG, 1, _inline("I", tile_px)),  # TileWidth
            _ENTRY.pack(323, _LONG, 1, _inline("I", tile_px)),  # TileLength
            None,  # 324 TileOffsets
            None,  # 325 TileByteCounts
            _ENTRY.pack(339, _SHORT, 1, _inline("H", 1)),  # SampleFormat: unsigned integer
        ]

    def page_ifd(self, description_count: int, description_field: bytes, offsets_field: bytes,
                 counts_field: bytes, next_ifd: int = 0) -> bytes:
        """The IFD bytes; ``*_field`` are the values themselves (if <= 8 bytes) or their packed offset."""
        per_page = iter((
            _ENTRY.pack(270, _ASCII, description_count, description_field.ljust(8, b"\0")),
            _ENTRY.pack(324, _LONG8, self.n_tiles, offsets_field.ljust(8, b"\0")),
            _ENTRY.pack(325, _LONG, self.n_tiles, counts_field.ljust(8, b"\0")),
        ))
        entries = [entry if entry is not None else next(per_page) for entry in self.entries]
        return b"".join((struct.pack("<Q", len(entries)), *entries, struct.pack("<Q", next_ifd)))


class BigTiffPageWriter:
    """Append tiled, deflate-compressed uint16 pages to a new BigTIFF file (see module docstring).

    Parameters
    ----------
    fh
        A new, empty file opened for binary writing and seeking (e.g. ``open(path, "xb+")``).
        The writer owns it from here on and closes it in `close` (or at once if
        the arguments are refused).
    empty_tile
        The compressed bytes of an all-zero tile; every tile not given to
        `append_page` points at this one copy.
    tile_px
        Tile width and height in pixels (a multiple of 16, as TIFF requires).
    resolution
        XResolution = YResolution of every page, pixels per unit as (numerator, denominator)
        32-bit integers; 1/1 (no calibration) by default.

    Bytes reach the OS only in `flush` (or when more than `MAX_PENDING_BYTES`
    are pending), so a crash between flushes loses at most the pages since the
    last one and never damages earlier pages. A write the OS refuses (disk
    full, file too large) cuts the file back to its last complete page, leaves
    the writer `broken` and raises the OSError: the file stays a valid TIFF of
    `pages_on_disk` pages, whether or not space comes back later.
    """

    def __init__(self, fh: BinaryIO, empty_tile: bytes, tile_px: int, resolution: tuple[int, int] = (1, 1)) -> None:
        if tile_px % 16 or not all(0 < n < 2**32 for n in resolution):
            fh.close()  # ours from the start, also when refused
            raise ValueError(f"TIFF tile size must be a multiple of 16 and the resolution a positive 32-bit "
                             f"rational, got {tile_px} and {resolution}")
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self._fh = fh
        self._fd = fh.fileno()
        self.tile_px = tile_px
        self.pages = 0
        #: Pages whose bytes and link are in the file (what a reader finds after a crash or a refused write).
        self.pages_on_disk = 0
        #: The OSError that stopped this writer, or None.
        self.broken: OSError | None = None
        software = SOFTWARE.encode("ascii") + b"\0"
        self._pending = bytearray(_HEADER.pack(b"II", 43, 8, 0, 0))
        self._empty_offset = len(self._pending)
        self._empty_size = len(empty_tile)
        self._software = (self._empty_offset + len(empty_tile), len(software))
        self._pending += empty_tile + software
        self._on_disk = 0  # file size written so far; `_pending` starts there
        self._next_ifd_field = _FIRST_IFD_FIELD  # where the pointer to the next page's IFD goes
        self._disk_link: tuple[int, int] | None = None  # (position, IFD offset) to patch on disk at flush
        self._templates: dict[tuple[int, int], _PageTemplate] = {}
        self._first_description: tuple[int, int] | None = None  # (file offset, bytes) of page 0's description
        self._description_patch: bytes | None = None  # written at the next flush, after the pages and link

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def append_page(self, shape: tuple[int, int], tiles: Mapping[int, bytes], description: str) -> None:
        """Append one page of ``shape`` (rows, columns).

        ``tiles`` maps a tile's row-major index (TIFF order) to its compressed
        bytes; tiles not in it are the shared empty tile. ``description`` is
        stored as the page's ImageDescription (7-bit ASCII).
        """
        if self._fh.closed:
            raise ValueError("BigTIFF page writer already closed")
        if self.broken is not None:
            raise OSError(self.broken.errno, f"page writer stopped after a refused write ({self.broken.strerror})")
        template = self._template(shape)
        start = self._on_disk + len(self._pending)
        page = bytearray()
        offsets, counts = template.empty_offsets.copy(), template.empty_counts.copy()
        for index in sorted(tiles):  # sorted: tile data in file order, as most writers lay it out
            if not 0 <= index < template.n_tiles:
                raise ValueError(f"tile {index} outside a {shape} page of {template.n_tiles} tiles")
            offsets[index], counts[index] = start + len(page), len(tiles[index])
            page += tiles[index]
        text = description.encode("ascii") + b"\0"
        description_field = self._out_of_line(page, start, text)
        if self.pages == 0 and len(text) > 8:
            self._first_description = (struct.unpack("<Q", description_field)[0], len(text))
        offsets_field = self._out_of_line(page, start, offsets.tobytes())
        counts_field = self._out_of_line(page, start, counts.tobytes())
        page += bytes(_align(start + len(page)) - start - len(page))  # the IFD starts on an 8-byte boundary
        ifd_offset = start + len(page)
        page += template.page_ifd(len(text), description_field, offsets_field, counts_field)
        self._link(ifd_offset)
        self._next_ifd_field = start + len(page) - 8  # the IFD's last field, next-IFD offset
        self._pending += page
        self.pages += 1
        if len(self._pending) > MAX_PENDING_BYTES:
            self.flush()

    def rewrite_first_description(self, description: str) -> None:
        """Replace the first page's ImageDescription by ``description`` of the same length (ASCII).

        Done in memory while the page is pending, else at the next `flush`, after the pages and the
        link it writes (so a crash leaves the old text, never a text describing pages not linked yet).
        Raises ValueError without a first page whose description is longer than 8 bytes, or for
        another length.
        """
        text = description.encode("ascii") + b"\0"
        if self._first_description is None or len(text) != self._first_description[1]:
            raise ValueError("the first page's description can only be replaced by one of the same length")
        offset = self._first_description[0]
        if offset >= self._on_disk:
            at = offset - self._on_disk
            self._pending[at : at + len(text)] = text
        else:
            self._description_patch = text

    @staticmethod
    def _out_of_line(page: bytearray, start: int, values: bytes) -> bytes:
        """The entry field for ``values``: the values themselves, or their offset.

        Values that fit in 8 bytes must be in the entry (TIFF); longer ones are appended to ``page``
        (8-byte aligned) and the entry holds their offset.
        """
        if len(values) <= 8:
            return values
        page += bytes(_align(start + len(page)) - start - len(page))
        offset = start + len(page)
        page += values
        return struct.pack("<Q", offset)

    def _link(self, ifd_offset: int) -> None:
        """Point the previous IFD (or the header) at the new IFD, in memory or at the next flush."""
        if self._next_ifd_field >= self._on_disk:
            at = self._next_ifd_field - self._on_disk
            self._pending[at : at + 8] = struct.pack("<Q", ifd_offset)
        else:  # that pointer is already on disk: patched in `flush`, after the page's bytes
            self._disk_link = (self._next_ifd_field, ifd_offset)

    def _template(self, shape: tuple[int, int]) -> _PageTemplate:
        template = self._templates.get(shape)
        if template is None:
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"page shape must be (rows, columns) >= 1, got {shape}")
            template = _PageTemplate(shape, self.tile_px, self._empty_offset, self._empty_size, *self._software,
                                     resolution=self.resolution)
            self._templates[shape] = template
        return template

    def flush(self, fsync: bool = False) -> None:
        """Write the pending pages, then the pointer that links them into the file.

        In this order a crash (or a reader) never sees a pointer to bytes that
        are not written yet. ``fsync`` also forces both to the disk (for close).
        Writes go straight to the file descriptor (``os.pwrite``), never through
        a Python buffer that could push half a page out later: if the OS refuses
        one, the file is cut back to where it was (`broken`, OSError raised).
        """
        if self._fh.closed or self.broken is not None:
            return
        start, link, patch = self._on_disk, self._disk_link, self._description_patch
        try:
            if self._pending:
                self._write_at(self._on_disk, self._pending)
            if link is not None:
                if fsync:
                    os.fsync(self._fd)
                position, ifd_offset = link
                self._write_at(position, struct.pack("<Q", ifd_offset))
            if patch is not None and self._first_description is not None:
                self._write_at(self._first_description[0], patch)
            if fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._abandon(start, link, exc)
            raise
        self._on_disk += len(self._pending)
        self._pending.clear()
        self._disk_link = None
        self._description_patch = None
        self.pages_on_disk = self.pages

    def _write_at(self, position: int, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, position)
            view, position = view[written:], position + written

    def _abandon(self, size: int, link: tuple[int, int] | None, exc: OSError) -> None:
        """Cut the file back to ``size`` bytes (its last complete page) and stop; the pending pages are lost."""
        self.broken = exc
        self._pending = bytearray()  # not clear(): the failed write's traceback may still hold a view of it
        self._disk_link = None
        self._description_patch = None
        try:
            if link is not None:  # the link may have reached the file: point it at nothing again
                self._write_at(link[0], struct.pack("<Q", 0))
            os.ftruncate(self._fd, size)
        except OSError:  # pragma: no cover - the pointer is written last, so the chain still ends in the file
            pass

    def close(self) -> None:
        """Flush everything to the disk (fsync) and close the file. Idempotent.

        Raises the OSError of a refused final write (the file is then cut back and closed).
        """
        if self._fh.closed:
            return
        try:
            self.flush(fsync=True)
        finally:
            self._fh.close()
