"""TIFF / OME-TIFF stacks for replay: calibration metadata, a frame reader, a writer.

Calibration read from a file (first match wins, see docs/recording.md):

- pixel size: OME ``Pixels/@PhysicalSizeX`` with ``PhysicalSizeXUnit`` (OME default
  µm); else for ImageJ files ``1 / XResolution`` in the ImageJ ``unit``; else
  ``1 / XResolution`` when ``ResolutionUnit`` is centimetre (or tifffile's
  millimetre / micrometre extensions). Inch-based resolutions are ignored: they
  are print/screen DPI defaults (72 dpi), not a calibration. ImageJ ``spacing``
  is the z step, not the pixel width, so it is never used for x/y.
- frame rate: OME ``Pixels/@TimeIncrement`` with ``TimeIncrementUnit`` (default s);
  else ImageJ ``finterval`` in ``tunit`` (default s). ImageJ's ``fps`` key is the
  animation speed chosen in the viewer, not the acquisition rate, and is ignored.

Everything is converted to ``pixel_size_nm`` and ``fps``.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from sam4em_live.frames import Calibration
from sam4em_live.io.frame_readers import GreyReducer, ReplayError, wire_dtype

log = logging.getLogger(__name__)

_LENGTH_NM: dict[str, float] = {
    "pm": 1e-3, "a": 0.1, "å": 0.1, "angstrom": 0.1, "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "micron": 1e3, "micrometer": 1e3, "micrometre": 1e3, "mm": 1e6, "millimeter": 1e6,
    "cm": 1e7, "centimeter": 1e7, "m": 1e9, "meter": 1e9,
}
_TIME_S: dict[str, float] = {
    "ns": 1e-9, "us": 1e-6, "microsecond": 1e-6, "ms": 1e-3, "msec": 1e-3, "millisecond": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
}
# ImageJ hyperstacks are classic TIFF (< 4 GiB); larger stacks are written as OME BigTIFF.
_IMAGEJ_MAX_BYTES = 2**32 - 2**25
# TIFF ResolutionUnit codes we trust as physical (3 = cm; 4, 5 = tifffile's mm and µm extensions).
_RESUNIT_NM: dict[int, float] = {3: 1e7, 4: 1e6, 5: 1e3}


def _lookup(unit: str | None, table: dict[str, float]) -> float | None:
    if unit is None:
        return None
    key = str(unit).strip().lower().replace("\\u00b5", "u").replace("µ", "u").replace("μ", "u")
    if key not in table and key.endswith("s") and key[:-1] in table and len(key) > 2:
        key = key[:-1]  # plurals: microns, seconds
    return table.get(key)


def length_unit_nm(unit: str | None) -> float | None:
    """Nanometres per ``unit`` (``"µm"``, ``"micron"``, ``"Å"``...), or None if unknown."""
    return _lookup(unit, _LENGTH_NM)


def time_unit_s(unit: str | None) -> float | None:
    """Seconds per ``unit`` (``"ms"``, ``"sec"``...), or None if unknown."""
    return _lookup(unit, _TIME_S)


def positive_number(value: Any) -> float | None:
    """``value`` as a finite positive float, or None (metadata values of any type)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _ome_calibration(xml: str) -> tuple[float | None, float | None]:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None, None
    pixel_size_nm = interval_s = None
    size, scale = positive_number(pixels.get("PhysicalSizeX")), length_unit_nm(pixels.get("PhysicalSizeXUnit", "µm"))
    if size is not None and scale is not None:
        pixel_size_nm = size * scale
    step, tscale = positive_number(pixels.get("TimeIncrement")), time_unit_s(pixels.get("TimeIncrementUnit", "s"))
    if step is not None and tscale is not None:
        interval_s = step * tscale
    return pixel_size_nm, interval_s


def read_tiff_calibration(tif: tifffile.TiffFile) -> tuple[Calibration, dict[str, str]]:
    """Calibration from a file's metadata and, per field, where it came from."""
    page = tif.pages.first
    xres = positive_number(page.resolution[0]) if hasattr(page, "resolution") else None
    pixel_size_nm = interval_s = None
    found: dict[str, str] = {}
    if tif.is_ome and tif.ome_metadata:
        pixel_size_nm, interval_s = _ome_calibration(tif.ome_metadata)
        found.update({"pixel_size_nm": "OME PhysicalSizeX"} if pixel_size_nm else {})
        found.update({"fps": "OME TimeIncrement"} if interval_s else {})
    imagej = tif.imagej_metadata or {}
    if pixel_size_nm is None and imagej and xres is not None:
        scale = length_unit_nm(imagej.get("unit"))
        if scale is not None:
            pixel_size_nm, found["pixel_size_nm"] = scale / xres, "ImageJ XResolution + unit"
    if pixel_size_nm is None and not imagej and xres is not None:
        scale = _RESUNIT_NM.get(int(page.resolutionunit))
        if scale is not None:
            pixel_size_nm, found["pixel_size_nm"] = scale / xres, "TIFF XResolution + ResolutionUnit"
        elif int(page.resolutionunit) == 2 and xres != 1:
            log.info("%s: ignoring XResolution %.4g per inch (a DPI default, not a calibration)", tif.filename, xres)
    if interval_s is None and positive_number(imagej.get("finterval")):
        tscale = time_unit_s(str(imagej.get("tunit", "s")))
        if tscale is not None:
            interval_s, found["fps"] = float(imagej["finterval"]) * tscale, "ImageJ finterval"
    fps = 1.0 / interval_s if interval_s else None
    return Calibration(pixel_size_nm=pixel_size_nm, fps=fps), found


def frame_layout(shape: Sequence[int], axes: str, path: Path) -> tuple[list[int], tuple[int, ...]]:
    """How to view an array of ``shape``/``axes`` as (frames, rows, columns[, samples]).

    Returns a transpose order (samples axis moved last) and the target shape.
    Singleton axes are dropped; more than one non-singleton axis besides Y, X
    and samples (e.g. time *and* z) is an error: replay needs one frame axis.
    """
    if len(shape) != len(axes):
        raise ReplayError(f"{path}: inconsistent TIFF axes {axes!r} for shape {tuple(shape)}")
    order = [i for i, a in enumerate(axes) if a != "S"] + [i for i, a in enumerate(axes) if a == "S"]
    samples = math.prod(shape[i] for i, a in enumerate(axes) if a == "S")
    core = [i for i, a in enumerate(axes) if a != "S"]
    if len(core) < 2 or axes[core[-2]] != "Y" or axes[core[-1]] != "X":
        raise ReplayError(f"{path}: cannot find image rows/columns in TIFF axes {axes!r}")
    leading = {axes[i]: shape[i] for i in core[:-2] if shape[i] > 1}
    if len(leading) > 1:
        raise ReplayError(f"{path}: stack has several frame axes {leading} (axes {axes!r}, shape {tuple(shape)}); "
                          "replay needs one series of 2-D frames")
    if samples > 4:
        raise ReplayError(f"{path}: {samples} samples per pixel; replay needs grey (or RGB grey) frames")
    n_frames = math.prod(leading.values()) if leading else 1
    target = (n_frames, shape[core[-2]], shape[core[-1]]) + ((samples,) if samples > 1 else ())
    return order, target


class TiffStackReader:
    """Frames of a TIFF / OME-TIFF / ImageJ stack (first image series).

    Uncompressed contiguous files are memory-mapped: frame ``i`` is a
    read-only view and nothing is loaded up front. Other files (compressed,
    tiled) are decoded one page per frame, so a large stack never has to fit
    in memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, OSError, ValueError) as exc:
            raise ReplayError(f"{path}: not a readable TIFF file ({exc})") from None
        try:
            self._setup()
        except BaseException:
            self._tif.close()
            raise

    def _setup(self) -> None:
        tif, path = self._tif, self.path
        if not tif.series or not tif.series[0].shape:
            raise ReplayError(f"{path}: TIFF file has no image data")
        if len(tif.series) > 1:
            shapes = ", ".join(str(s.shape) for s in tif.series[:4])
            raise ReplayError(f"{path}: {len(tif.series)} image series ({shapes}...); frames of different "
                              "sizes or several images: replay needs one stack of equal-size frames")
        series = tif.series[0]
        self._order, self._target = frame_layout(series.shape, series.axes, path)
        self.n_frames, rows, cols = self._target[:3]
        self.shape = (rows, cols)
        self._grey = GreyReducer(path)
        self._wire = wire_dtype(series.dtype, path)
        self.dtype = self._wire.str
        self._stack = self._memmap(series)
        if self._stack is None and len(series.pages) != self.n_frames:
            raise ReplayError(f"{path}: {len(series.pages)} pages for {self.n_frames} frames; this compressed "
                              "layout is not supported (save one frame per page)")
        self._page_layout = None if self._stack is not None else frame_layout(
            series.keyframe.shape, series.keyframe.axes, path)
        self.calibration, found = read_tiff_calibration(tif)
        self.metadata: dict[str, Any] = {
            "format": "ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff",
            "axes": series.axes, "memory_mapped": self._stack is not None, "calibration_from": found,
        }

    def _memmap(self, series: Any) -> np.ndarray | None:
        if series.dataoffset is None:
            return None
        try:
            raw = tifffile.memmap(self.path, mode="r")
        except ValueError:
            return None
        # Dropping singleton axes is always possible as a view; copy=False makes sure we never
        # read a huge stack into memory by accident.
        return np.reshape(raw.transpose(self._order), self._target, copy=False)

    def read(self, i: int) -> np.ndarray:
        if self._stack is not None:
            pixels = np.asarray(self._stack[i])
        else:
            assert self._page_layout is not None  # set whenever the stack is not memory-mapped
            order, target = self._page_layout
            try:
                page = self._tif.series[0].pages[i]
                if page is None:  # tifffile's placeholder for a page it could not index
                    raise ValueError("page not found")
                pixels = np.reshape(page.asarray().transpose(order), target[1:])
            except Exception as exc:  # tifffile/imagecodecs raise many types for corrupt pages
                raise ReplayError(f"{self.path}: page {i} cannot be decoded ({type(exc).__name__}: {exc})") from None
        grey = self._grey(pixels)
        if grey.dtype != self._wire:
            grey = grey.astype(self._wire)
        return np.ascontiguousarray(grey)  # a no-op (still a view) for memory-mapped frames

    def close(self) -> None:
        self._stack = None
        self._tif.close()


def write_tiff_stack(
    path: str | Path,
    frames: np.ndarray | Sequence[np.ndarray] | Iterable[np.ndarray],
    pixel_size_nm: float | None = None,
    fps: float | None = None,
    ome: bool = False,
    compression: str | None = None,
    n_frames: int | None = None,
) -> Path:
    """Write 2-D grey frames as a TIFF stack with calibration that `TiffStackReader` reads back.

    Parameters
    ----------
    path
        Output file (overwritten).
    frames
        A (T, rows, columns) or (rows, columns) array, a sequence of 2-D arrays,
        or any iterable of 2-D arrays together with ``n_frames`` (streamed page
        by page, never stacked in memory).
    pixel_size_nm, fps
        Calibration to store (None = leave out).
    ome
        Write OME-TIFF (BigTIFF) instead of an ImageJ hyperstack. ImageJ files
        only hold uint8, uint16 and float32 and stay below 4 GiB; other pixel
        types and larger stacks are written as OME-TIFF automatically.
    compression
        tifffile compression name (e.g. ``"zlib"``); None writes uncompressed
        files, which replay memory-maps.
    """
    path = Path(path)
    if isinstance(frames, np.ndarray):
        stack = frames[None] if frames.ndim == 2 else frames
        if stack.ndim != 3:
            raise ValueError(f"frames must be 2-D or (T, rows, columns), got shape {frames.shape}")
        first, count, pages = stack[0], stack.shape[0], iter(stack)
    else:
        if n_frames is None:
            if not isinstance(frames, Sized):
                raise ValueError("pass n_frames when frames is an iterator")
            n_frames = len(frames)
        pages = iter(frames)
        first = np.asarray(next(pages))
        count, pages = n_frames, _chain_first(first, pages)
    if first.ndim != 2:
        raise ValueError(f"each frame must be 2-D, got shape {first.shape}")
    imagej_ok = first.dtype in (np.uint8, np.uint16, np.float32) and count * first.nbytes < _IMAGEJ_MAX_BYTES
    use_ome = ome or not imagej_ok
    metadata, options = _calibration_tags(use_ome, pixel_size_nm, fps)
    options.update(shape=(count, *first.shape), dtype=first.dtype, compression=compression, photometric="minisblack")
    with tifffile.TiffWriter(path, ome=use_ome, imagej=not use_ome, bigtiff=use_ome) as writer:
        writer.write(_checked(pages, first.shape, first.dtype, count), metadata=metadata, **options)
    return path


def _calibration_tags(use_ome: bool, pixel_size_nm: float | None, fps: float | None) -> tuple[dict, dict]:
    """(metadata, extra write options) carrying the calibration in OME or ImageJ form."""
    metadata: dict[str, Any] = {"axes": "TYX"}
    options: dict[str, Any] = {}
    if use_ome:
        if pixel_size_nm is not None:
            metadata.update(PhysicalSizeX=pixel_size_nm, PhysicalSizeXUnit="nm",
                            PhysicalSizeY=pixel_size_nm, PhysicalSizeYUnit="nm")
        if fps is not None:
            metadata.update(TimeIncrement=1.0 / fps, TimeIncrementUnit="s")
        return metadata, options
    if pixel_size_nm is not None:
        metadata["unit"] = "nm"
        options["resolution"] = (1.0 / pixel_size_nm, 1.0 / pixel_size_nm)
    if fps is not None:
        metadata.update(finterval=1.0 / fps, tunit="s")
    return metadata, options


def _chain_first(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _checked(pages: Iterable[np.ndarray], shape: tuple[int, ...], dtype: np.dtype, count: int) -> Iterator[np.ndarray]:
    written = 0
    for page in pages:
        page = np.asarray(page)
        if page.shape != shape or page.dtype != dtype:
            raise ValueError(f"frame {written} is {page.shape} {page.dtype}, expected {shape} {dtype}")
        written += 1
        if written > count:
            raise ValueError(f"more frames than n_frames={count}")
        yield page
    if written != count:
        raise ValueError(f"got {written} frames, expected {count}")
