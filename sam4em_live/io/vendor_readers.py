"""Instrument files through rosettasciio: Gatan .dm3/.dm4, Velox .emd, TIA .ser/.emi, MRC movies.

We do not parse vendor formats ourselves: rosettasciio (the HyperSpy project's readers, maintained by the
field) opens the file lazily and hands back a dask array plus axes and metadata. For DigitalMicrograph and
MRC files that array is a memory map of the file, for Velox an HDF5 dataset read chunk by chunk; nothing
is loaded at open. Frame ``i`` is computed alone: only the graph of the chunk that holds it is run
(`LazyFrames`), which costs well under a millisecond instead of dask's whole-graph scheduling (~6 ms per
frame on a 200-frame stack, too slow for replay at camera rates). TIA ``.ser`` files are the exception:
rosettasciio has no frame-wise access for them and reads the whole file at the first frame (they are
small in practice; docs/formats.md).

Frames are the leading (navigation) axes, the last two axes are the image (rows, columns). A file with
several frame axes (a 4-D STEM scan) or no 2-D image is refused with a message naming it.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.io.frame_readers import ReplayError, wire_dtype
from sam4em_live.io.mapped_image import MappedFrames, SiblingImageLayout
from sam4em_live.io.vendor_calibration import (
    FileCalibration,
    calibration_from_signal,
    tell_missing,
    tia_frame_times_s,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sam4em_live.frames import Calibration

log = logging.getLogger(__name__)

#: rosettasciio plugin module for each suffix we replay.
RSCIIO_MODULES: dict[str, str] = {
    ".dm3": "rsciio.digitalmicrograph", ".dm4": "rsciio.digitalmicrograph",
    ".emd": "rsciio.emd", ".ser": "rsciio.tia", ".emi": "rsciio.tia", ".mrc": "rsciio.mrc",
}
FORMAT_NAMES: dict[str, str] = {
    ".dm3": "gatan-dm3", ".dm4": "gatan-dm4", ".emd": "emd", ".ser": "tia-ser", ".emi": "tia-emi", ".mrc": "mrc",
}
#: TIA series above this size are read whole all the same (rosettasciio's only way): said in a warning.
_WHOLE_FILE_WARNING_BYTES = 2**30
#: Readers that take a ``chunks`` argument get one frame per chunk.
_CHUNKED = {"rsciio.digitalmicrograph", "rsciio.mrc"}


def read_signals(path: Path, lazy: bool = True) -> list[dict[str, Any]]:
    """The signal dictionaries rosettasciio reads from ``path``; `ReplayError` naming the file if it cannot read it."""
    import importlib

    module_name = RSCIIO_MODULES.get(path.suffix.lower())
    if module_name is None:
        raise ReplayError(f"{path}: not a format read through rosettasciio ({', '.join(RSCIIO_MODULES)})")
    reader: Callable[..., list[dict[str, Any]]] = importlib.import_module(module_name).file_reader
    kwargs: dict[str, Any] = {"lazy": lazy}
    if lazy and module_name in _CHUNKED:
        # one frame per chunk, whole images (a 2-D file gets row chunks; `LazyFrames` joins them)
        kwargs["chunks"] = {0: 1, 1: -1, 2: -1}
    if module_name != "rsciio.mrc":
        try:
            return reader(str(path), **kwargs)
        except Exception as exc:  # rosettasciio raises many types for damaged or foreign files
            raise ReplayError(f"{path}: rosettasciio cannot read it ({type(exc).__name__}: {exc})") from None
    # rosettasciio's MRC reader never closes the header file it opens: the handle is closed when the
    # call returns (or its exception is dropped), inside this block, so the ResourceWarning stays here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return reader(str(path), **kwargs)
        except Exception as exc:  # as above
            message = f"{path}: rosettasciio cannot read it ({type(exc).__name__}: {exc})"
    raise ReplayError(message)


def split_axes(signal: Mapping[str, Any], path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(frame axes, [y axis, x axis]) of a signal in array order; `ReplayError` if it has no 2-D image."""
    axes = sorted(signal["axes"], key=lambda a: a.get("index_in_array", signal["axes"].index(a)))
    shape = tuple(signal["data"].shape)
    if len(axes) != len(shape):
        raise ReplayError(f"{path}: {len(axes)} axes for data of shape {shape}")
    image = [a for a in axes if not a.get("navigate", False)]
    frames = [a for a in axes if a.get("navigate", False)]
    if len(image) != 2 or axes[-2:] != image:
        raise ReplayError(f"{path}: not a series of 2-D images (data shape {shape}, "
                          f"{len(image)} signal axes); replay needs frames of rows x columns")
    many = [int(a["size"]) for a in frames if int(a["size"]) > 1]
    if len(many) > 1:
        raise ReplayError(f"{path}: {len(many)} frame axes of sizes {many} (a scan, not a movie); "
                          "replay needs one series of 2-D frames")
    return frames, image


def pick_image_signal(signals: list[dict[str, Any]], path: Path) -> tuple[dict[str, Any], list[str]]:
    """The first signal that is a series of 2-D images, and titles of the others that were left out."""
    errors: list[str] = []
    for k, signal in enumerate(signals):
        try:
            split_axes(signal, path)
        except ReplayError as exc:
            errors.append(str(exc))
            continue
        others = [_title(s, j) for j, s in enumerate(signals) if j != k]
        return signal, others
    if len(errors) == 1:
        raise ReplayError(errors[0])
    raise ReplayError(f"{path}: none of its {len(signals)} datasets is a series of 2-D images")


def _title(signal: Mapping[str, Any], k: int) -> str:
    general = (signal.get("metadata") or {}).get("General") or {}
    return str(general.get("title") or f"dataset {k}")


class LazyFrames:
    """Frame ``i`` of a lazy (dask) stack of shape (frames, rows, columns), one chunk computed at a time.

    Only the sub-graph of the chunk that holds frame ``i`` runs (culled, synchronous); the last chunk is
    kept, so a reader whose chunks hold several frames (TIA) reads each chunk once per pass.
    """

    def __init__(self, data: Any) -> None:
        if any(len(c) > 1 for c in data.chunks[1:]):
            data = data.rechunk({1: -1, 2: -1})  # one chunk per image: no stitching per frame
        self._graph = dict(data.__dask_graph__())
        self._keys = [row[0][0] for row in data.__dask_keys__()]
        self._starts = np.cumsum((0, *data.chunks[0]))
        self._chunk_index = -1
        self._chunk: np.ndarray | None = None

    def __getitem__(self, i: int) -> np.ndarray:
        from dask.local import get_sync
        from dask.optimization import cull

        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        if k != self._chunk_index:
            self._chunk = None  # drop the old chunk (maybe a large TIA file) before computing the next
            key = self._keys[k]
            graph, _ = cull(self._graph, [key])
            self._chunk = np.asarray(get_sync(graph, key))
            self._chunk_index = k
        assert self._chunk is not None
        return self._chunk[i - int(self._starts[k])]

    def close(self) -> None:
        self._graph = {}
        self._chunk = None


def rosettasciio_memmap(data: Any, frames: LazyFrames) -> np.ndarray | None:
    """The whole stack as one read-only memory map, as rosettasciio describes it, or None.

    rosettasciio's DigitalMicrograph and MRC readers build their lazy array from ``slice_memmap`` tasks
    that each map the file again (~1 ms per frame with dask's bookkeeping). The map they describe
    (file, dtype, shape, offset, order) is opened once here and used only if it has the stack's shape
    and its first and last frames equal rosettasciio's own lazy read of them; frames are then views.
    """
    # dask's task objects (dask >= 2025): another dask keeps the lazy path, slower but the same frames
    tasks = [v for v in dict(data.__dask_graph__()).values()
             if getattr(getattr(v, "func", None), "__name__", "") == "slice_memmap"
             and isinstance(getattr(v, "kwargs", None), dict)]
    if not tasks:
        return None
    spec: dict[str, Any] = tasks[0].kwargs
    if spec.get("key") is not None or spec.get("positions"):
        return None
    try:
        mapped = np.memmap(spec["file"], dtype=spec["dtypes"], mode="r", offset=int(spec["offset"]),
                           shape=tuple(int(n) for n in spec["shape"]), order=spec.get("order", "C"))
        stack = mapped.reshape(tuple(int(n) for n in data.shape))
    except (KeyError, TypeError, ValueError, OSError):
        return None
    last = stack.shape[0] - 1
    if not (np.array_equal(stack[0], frames[0]) and np.array_equal(stack[last], frames[last])):
        return None
    return stack


class Hdf5FrameChunks:
    """Frame ``i`` of a Velox EMD image stack read as its own HDF5 chunk (h5py ``read_direct_chunk``).

    Velox stores an image stack as an HDF5 dataset (rows, columns, frames) chunked one frame per chunk,
    uncompressed. rosettasciio builds its lazy array on that dataset; reading a frame through h5py's
    hyperslab selection costs ~3.5 ms per 1024² frame, reading the chunk's bytes ~0.3 ms. Used only when
    the dataset is exactly that layout (else `LazyFrames`): one dataset under the lazy array, (rows,
    columns, frames) of the frame size, one chunk per frame, no filters, little-endian.
    `mapped_hdf5_chunks` maps those chunks in place where it can (no read at all).
    """

    def __init__(self, dataset: Any, shape: tuple[int, int]) -> None:
        self._dataset = dataset
        self._shape = shape
        self._dtype = np.dtype(dataset.dtype)

    @classmethod
    def of(cls, data: Any, shape: tuple[int, int]) -> Hdf5FrameChunks | None:
        """The fast reader for a lazy array built on a Velox-layout dataset, else None."""
        import h5py

        found = [v for v in dict(data.__dask_graph__()).values() if isinstance(v, h5py.Dataset)]
        if len(found) != 1:
            return None
        dataset = found[0]
        rows, cols = shape
        if (dataset.ndim != 3 or dataset.shape[:2] != (rows, cols) or dataset.chunks != (rows, cols, 1)
                or dataset.id.get_create_plist().get_nfilters() != 0 or dataset.dtype.byteorder == ">"):
            return None
        return cls(dataset, shape)

    def __getitem__(self, i: int) -> np.ndarray:
        _, raw = self._dataset.id.read_direct_chunk((0, 0, i))
        return np.frombuffer(raw, dtype=self._dtype).reshape(self._shape)

    def mapped(self) -> MappedFrames | None:
        """The frames as read-only views of one memory map of the file (HDF5's chunk index), else None.

        An uncompressed chunk is the frame's bytes as they lie in the file, so frame ``i`` is a view at
        its chunk's offset: no read and no copy, replayed like an MRC or DM4 stack. Velox (and h5py)
        interleave other chunks (per-frame metadata) with the frames, so each frame has its own offset.
        Used only if the first and last frames equal the chunk reads above (the reference).
        """
        offsets = self._chunk_offsets()
        if offsets is None:
            return None
        try:
            frames = MappedFrames(self._dataset.file.filename, offsets, self._shape, self._dtype)
        except (OSError, ValueError):
            return None
        last = offsets.size - 1
        if not (np.array_equal(frames[0], self[0]) and np.array_equal(frames[last], self[last])):
            frames.close()
            return None
        return frames

    def _chunk_offsets(self) -> np.ndarray | None:
        """Each frame's chunk as a byte offset into the file (HDF5's chunk index), None if one is unwritten."""
        info = self._dataset.id.get_chunk_info_by_coord
        frame_bytes = self._dtype.itemsize * self._shape[0] * self._shape[1]
        offsets = np.empty(int(self._dataset.shape[2]), np.int64)
        for i in range(offsets.size):  # ~5 us each: 50 ms at open for a 20 GB recording of 1024² frames
            chunk = info((0, 0, i))
            if chunk.byte_offset is None or chunk.size != frame_bytes:
                return None
            offsets[i] = chunk.byte_offset
        return offsets

    def close(self) -> None:
        self._dataset = None


class VendorStackReader:
    """Frames of one instrument file (.dm3/.dm4/.emd/.ser/.emi/.mrc) read lazily through rosettasciio.

    ``calibration`` holds what the file records (`vendor_calibration`); ``metadata`` names the format,
    the dataset replayed, the calibration sources and the fields the file lacks.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        signal, others = pick_image_signal(read_signals(self.path), self.path)
        frame_axes, image_axes = split_axes(signal, self.path)
        data = signal["data"]
        shape = tuple(int(s) for s in data.shape)
        self.n_frames = math.prod(shape[:-2]) if len(shape) > 2 else 1
        self.shape = (shape[-2], shape[-1])
        data = data.reshape((self.n_frames, *self.shape))
        self._wire = wire_dtype(data.dtype, self.path)
        self.dtype = self._wire.str
        chunks = Hdf5FrameChunks.of(data, self.shape) if self.path.suffix.lower() == ".emd" else None
        mapped_chunks = chunks.mapped() if chunks is not None else None
        self._frames: LazyFrames | Hdf5FrameChunks | MappedFrames | np.ndarray = (
            mapped_chunks or chunks or LazyFrames(data))
        if self.path.suffix.lower() in (".ser", ".emi") and data.nbytes > _WHOLE_FILE_WARNING_BYTES:
            log.warning("%s: %.1f GB; rosettasciio reads TIA series whole, at the first frame", self.path,
                        data.nbytes / 1e9)
        if isinstance(self._frames, LazyFrames):
            mapped = rosettasciio_memmap(data, self._frames)
            if mapped is not None:
                self._frames.close()
                self._frames = mapped
        self.file_calibration: FileCalibration = calibration_from_signal(signal, frame_axes, image_axes)
        self.calibration: Calibration = self.file_calibration.calibration
        # acquisition times per frame where the file records them (`sources.replay.TimedFrameReader`)
        self.frame_times_s: tuple[float, ...] = (
            tia_frame_times_s(signal, self.n_frames) if self.path.suffix.lower() in (".ser", ".emi") else ())
        self.metadata: dict[str, Any] = {
            "format": FORMAT_NAMES[self.path.suffix.lower()], "reader": "rosettasciio",
            "dataset": _title(signal, 0), "memory_mapped": isinstance(self._frames, (np.ndarray, MappedFrames)),
            "calibration_from": self.file_calibration.found,
            "calibration_missing": list(self.file_calibration.missing),
        }
        if others:
            self.metadata["datasets_not_replayed"] = others
            log.warning("%s: replaying dataset %r; not replayed: %s", self.path, self.metadata["dataset"],
                        ", ".join(others))
        tell_missing(self.path, self.file_calibration.missing)

    def read(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} of {self.n_frames}")
        try:
            pixels = self._frames[i]
        except (OSError, ValueError) as exc:
            raise ReplayError(f"{self.path}: frame {i} cannot be read ({type(exc).__name__}: {exc})") from None
        if pixels.dtype != self._wire:
            pixels = pixels.astype(self._wire)
        return np.ascontiguousarray(pixels)

    def close(self) -> None:
        if not isinstance(self._frames, np.ndarray):
            self._frames.close()
        self._frames = np.empty((0, *self.shape), np.dtype(self.dtype))  # drops the memory map


def read_single_frame(path: Path) -> tuple[np.ndarray, Mapping[str, Any]]:
    """The one 2-D image in a .dm3/.dm4 file (one frame of a folder or in-situ tree) and its signal.

    Read eagerly: the file is one frame, so a lazy graph would only add overhead.
    """
    signals = read_signals(path, lazy=False)
    signal, _ = pick_image_signal(signals, path)
    pixels = np.asarray(signal["data"])
    if pixels.ndim != 2:
        squeezed = pixels.squeeze()
        if squeezed.ndim != 2:
            raise ReplayError(f"{path}: holds {pixels.shape[0]} frames; a frame file must hold one image")
        pixels = squeezed
    return pixels, signal


def single_frame_calibration(path: Path, signal: Mapping[str, Any]) -> FileCalibration:
    """The calibration a one-frame file records (its image axes; a frame rate it cannot know)."""
    frame_axes, image_axes = split_axes(signal, path)
    return calibration_from_signal(signal, frame_axes, image_axes)


#: DigitalMicrograph data types read by the sibling fast path (plain numeric images; RGB and packed
#: complex go through rosettasciio in full).
_PLAIN_DM_TYPES = {1, 2, 6, 7, 9, 10, 11, 12}
#: Bytes before the image data compared between sibling files: the data tag's header (name, size,
#: type info; 51 bytes in DM4) and the end of the tag before it (`dm_image_layout`).
_SIGNATURE_BYTES = 64


def dm_image_layout(path: Path) -> SiblingImageLayout | None:
    """Where the image of a file holding one plain 2-D image lies (parsed by rosettasciio), else None.

    A Gatan in-situ capture (or a DigitalMicrograph export) writes every frame file with the same tags, so
    a sibling file of the same size whose data tag header (the 64 bytes just before the image; 51 in DM4)
    is the same as this file's has its image at the same place: it is mapped there
    (`mapped_image.SiblingImageLayout`) instead of re-parsing ~1,000 tags per frame (rosettasciio's tag
    parser takes 10-15 ms per file, too slow for replay at camera rates).
    """
    from rsciio.digitalmicrograph._api import DigitalMicrographReader, ImageObject

    try:
        with open(path, "rb") as f:
            parsed = DigitalMicrographReader(f)
            parsed.parse_file()
            images = [ImageObject(d, f) for d in parsed.get_image_dictionaries() or []]
            if len(images) != 1 or int(images[0].imdict.ImageData.DataType) not in _PLAIN_DM_TYPES:
                return None
            image = images[0]
            shape = tuple(int(s) for s in image.shape)
            offset = int(image.imdict.ImageData.Data.offset)
            if len(shape) != 2 or offset < _SIGNATURE_BYTES:
                return None
            f.seek(offset - _SIGNATURE_BYTES)
            signature = f.read(_SIGNATURE_BYTES)
            size = os.fstat(f.fileno()).st_size
    except Exception:  # anything rosettasciio cannot parse takes the full path, which reports it
        return None
    return SiblingImageLayout(offset, (shape[0], shape[1]), np.dtype(image.dtype).newbyteorder("<"), size, signature)
