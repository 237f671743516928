"""Recordings saved as one file per frame: a folder of numbered JPEG, PNG, TIFF or DigitalMicrograph files.

The SAM4EM layout (``000000.jpeg``, ``000001.jpeg``...) and the usual DigitalMicrograph export (a folder of
TIFF frames) are read here; Gatan's in-situ trees (``Hour_00/Minute_00/Second_00/...dm4``) are in
`sam4em_live.io.insitu_folder` and share `FileSeriesReader`.

What a folder may hold (docs/formats.md, "Frame folders"), one rule for every case:

- **Frame files of one format.** Frames are ordered by the integer that ends their name (numeric, so
  ``2.png`` comes before ``10.png``). Files of two frame formats in one folder (JPEG and PNG, PNG and TIFF;
  ``.jpg``/``.jpeg`` and ``.tif``/``.tiff`` count as one format each) are **refused**, naming how many of
  each: we cannot know which set is the recording.
- **Anything else is ignored and reported.** Notes, metadata sidecars, sub-folders, hidden files: a
  warning names them (count and the first few), and ``metadata["ignored_files"]`` keeps the list, so
  ``run.json`` shows what was left out. Nothing is ignored silently.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.frames import Calibration
from sam4em_live.io.frame_readers import GreyReducer, ReplayError, wire_dtype
from sam4em_live.io.mapped_image import SiblingImageLayout, tiff_image_layout
from sam4em_live.io.vendor_calibration import tell_missing

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

log = logging.getLogger(__name__)

#: Frame file formats and their suffixes (lower case).
FRAME_FILE_FORMATS: dict[str, tuple[str, ...]] = {
    "jpeg": (".jpg", ".jpeg"), "png": (".png",), "tiff": (".tif", ".tiff"), "gatan-dm": (".dm3", ".dm4"),
}
FRAME_FILE_SUFFIXES: tuple[str, ...] = tuple(s for suffixes in FRAME_FILE_FORMATS.values() for s in suffixes)
_FORMAT_OF_SUFFIX = {s: fmt for fmt, suffixes in FRAME_FILE_FORMATS.items() for s in suffixes}
_TRAILING_INT = re.compile(r"(\d+)$")
#: How many ignored names a warning shows, and how many ``metadata["ignored_files"]`` keeps.
_SHOWN, _KEPT = 5, 200


def frame_format(path: Path) -> str | None:
    """The frame format of a file name (``"tiff"`` for ``a.TIF``), None for anything else."""
    return _FORMAT_OF_SUFFIX.get(path.suffix.lower())


def report_ignored(folder: Path, ignored: Sequence[str], metadata: dict[str, Any]) -> None:
    """Warn about entries of ``folder`` that are not frames and keep their names in ``metadata``."""
    if not ignored:
        return
    names = sorted(ignored)
    shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
    log.warning("%s: ignoring %d %s: %s", folder, len(names),
                "entry that is not a frame" if len(names) == 1 else "entries that are not frames", shown)
    metadata["ignored_count"] = len(names)
    metadata["ignored_files"] = names[:_KEPT]


@dataclass(frozen=True, slots=True)
class FolderListing:
    """The numbered frame files of a folder (in frame order), their format, and what was left out."""

    files: list[Path]
    format: str
    ignored: list[str]


def list_frame_folder(folder: Path) -> FolderListing:
    """Sort a folder into frame files and ignored entries; `ReplayError` for mixed formats or bad names."""
    by_format: dict[str, list[Path]] = {}
    ignored: list[str] = []
    for entry in folder.iterdir():
        fmt = frame_format(entry) if entry.is_file() else None
        if fmt is None:
            ignored.append(entry.name + ("/" if entry.is_dir() else ""))
        else:
            by_format.setdefault(fmt, []).append(entry)
    if not by_format:
        raise ReplayError(f"{folder}: no JPEG/PNG frames (nor TIFF or DigitalMicrograph frames) in this "
                          "folder (expected 000000.jpeg, 000001.jpeg, ...)")
    if len(by_format) > 1:
        counts = Counter({fmt: len(files) for fmt, files in by_format.items()})
        raise ReplayError(f"{folder}: mixed frame formats (" + ", ".join(
            f"{n} {fmt.upper()}" for fmt, n in counts.most_common()) + "); a frame folder must hold one "
            "format: move the other files out")
    ((fmt, files),) = by_format.items()
    return FolderListing(order_by_number(folder, files), fmt, ignored)


def order_by_number(folder: Path, files: list[Path]) -> list[Path]:
    """``files`` in numeric order of the integer ending their stem; errors name unnumbered or duplicate files."""
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


def decode_frame_file(path: Path, fmt: str) -> np.ndarray:
    """The pixels of one frame file (2-D, or rows x columns x samples for colour JPEG/PNG)."""
    try:
        if fmt in ("jpeg", "png"):
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im.convert("RGB") if im.mode == "P" else im)
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) != 1:
                    raise ReplayError(f"{path}: {len(tif.pages)} pages; a frame file must hold one image")
                return tif.pages.first.asarray()
        from sam4em_live.io.vendor_readers import read_single_frame

        return read_single_frame(path)[0]
    except ReplayError:
        raise
    except Exception as exc:  # Pillow, tifffile and rosettasciio raise many types for bad files
        raise ReplayError(f"{path}: cannot decode frame ({type(exc).__name__}: {exc})") from None


def _header_size(path: Path, fmt: str) -> tuple[int, int] | None:
    """(rows, columns) from the file header alone where that is cheap (JPEG/PNG/TIFF), else None."""
    try:
        if fmt in ("jpeg", "png"):
            from PIL import Image

            with Image.open(path) as im:
                return (im.height, im.width)
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                return (int(page.imagelength), int(page.imagewidth))
    except Exception as exc:  # as above: a broken header is reported by name
        raise ReplayError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    return None


def file_calibration(path: Path, fmt: str) -> tuple[Calibration, dict[str, str], list[str]]:
    """(calibration, where each field came from, missing fields) of the first frame file."""
    found: dict[str, str] = {}
    if fmt == "tiff":
        import tifffile

        from sam4em_live.io.tiff_io import read_tiff_calibration

        with tifffile.TiffFile(path) as tif:
            calibration, found = read_tiff_calibration(tif)
    elif fmt == "gatan-dm":
        from sam4em_live.io.vendor_readers import read_single_frame, single_frame_calibration

        result = single_frame_calibration(path, read_single_frame(path)[1])
        calibration, found = result.calibration, dict(result.found)
    else:
        calibration = Calibration()  # JPEG/PNG carry no calibration we trust
    missing = [k for k in ("pixel_size_nm", "fps") if getattr(calibration, k) is None]
    return calibration, found, missing


class FileSeriesReader:
    """Frames that are files, one per frame, in a given order (a frame folder or an in-situ tree).

    Every file header is checked at open where that is cheap (JPEG/PNG/TIFF), so a folder with frames of
    different sizes fails before streaming; DigitalMicrograph frames are checked as they are read (a bad
    one is a `ReplayError` the replay counts and skips). DigitalMicrograph and TIFF files that share the
    first file's layout are mapped at its image offset (`mapped_image.SiblingImageLayout`: read-only
    views, no decoding); others are decoded on each `read`. Memory stays the frames in flight, whatever
    the number of files.
    """

    def __init__(self, path: Path, files: list[Path], fmt: str, metadata: dict[str, Any],
                 calibration: Calibration | None = None) -> None:
        self.path = path
        self.files = files
        self.format = fmt
        self.n_frames = len(files)
        self._grey = GreyReducer(path)
        sizes: dict[tuple[int, int], str] = {}
        for p in files:
            size = _header_size(p, fmt)
            if size is None:
                break  # no cheap header: checked per frame instead
            sizes.setdefault(size, p.name)
            if len(sizes) > 1:
                raise ReplayError(f"{path}: mixed frame sizes: " + ", ".join(
                    f"{name} is {w}x{h}" for (h, w), name in sizes.items()))
        self._layout = _first_file_layout(files[0], fmt)
        self.fast_reads = 0  # frames mapped at the first file's image offset (`mapped_image`)
        first = self._grey(decode_frame_file(files[0], fmt))
        if first.ndim != 2:
            raise ReplayError(f"{files[0]}: frame of shape {first.shape} is not a 2-D image")
        self.shape = (int(first.shape[0]), int(first.shape[1]))
        self._wire = wire_dtype(first.dtype, files[0])
        self.dtype = self._wire.str
        if calibration is None:
            calibration, found, missing = file_calibration(files[0], fmt)
            metadata = {**metadata, "calibration_from": found, "calibration_missing": missing}
        self.calibration = calibration
        # frames of the first file's layout are mapped, not decoded: read on the consumer's thread (replay)
        self.metadata: dict[str, Any] = {"first_file": files[0].name, "last_file": files[-1].name,
                                         "memory_mapped": self._layout is not None, **metadata}

    def read(self, i: int) -> np.ndarray:
        path = self.files[i]
        pixels = self._layout.read(path) if self._layout is not None else None
        if pixels is None:
            pixels = self._grey(decode_frame_file(path, self.format))
        else:
            self.fast_reads += 1
        if pixels.shape != self.shape:
            raise ReplayError(f"{path}: frame is {pixels.shape[1]}x{pixels.shape[0]}, "
                              f"expected {self.shape[1]}x{self.shape[0]}")
        if pixels.dtype.str != self.dtype:
            if wire_dtype(pixels.dtype, path) != self._wire:
                raise ReplayError(f"{path}: pixel type {pixels.dtype} differs from the first frame's {self.dtype}")
            pixels = pixels.astype(self._wire)
        return np.ascontiguousarray(pixels)

    def close(self) -> None:
        pass


def _first_file_layout(path: Path, fmt: str) -> SiblingImageLayout | None:
    """Where the first file's image lies, for mapping its siblings there (DigitalMicrograph, TIFF), else None."""
    if fmt == "gatan-dm":
        from sam4em_live.io.vendor_readers import dm_image_layout

        return dm_image_layout(path)
    return tiff_image_layout(path) if fmt == "tiff" else None


def open_frame_folder(folder: Path) -> FileSeriesReader:
    """A flat folder of numbered frame files (see the module docstring for what it may hold)."""
    listing = list_frame_folder(folder)
    metadata: dict[str, Any] = {"format": "image-folder" if listing.format in ("jpeg", "png") else
                                f"{listing.format}-folder", "frame_format": listing.format}
    report_ignored(folder, listing.ignored, metadata)
    reader = FileSeriesReader(folder, listing.files, listing.format, metadata)
    tell_missing(folder, reader.metadata.get("calibration_missing", []))
    return reader
