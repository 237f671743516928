"""Instrument files made for tests and benchmarks: DigitalMicrograph 4 files and Velox EMD stacks.

The package never writes these formats; the tests need realistic ones.

DM4: a minimal file written from scratch.

The only real DM files we have are tiny (2x2 pixels, ../shared/fixtures/formats). Replay speed and the
memory of a long in-situ recording need realistic frames (1024² uint16), so this writes the smallest
tag tree that a DM reader needs -- ``ImageList`` > image > ``ImageData`` (``Data``, ``DataType``,
``Dimensions``, ``Calibrations``) -- following the DM4 layout (big-endian tag structure, little-endian
values). Files are checked by reading them back with rosettasciio (tests/test_frame_folders.py), the
reader the package uses; the fast sibling path is checked against it on the real fixtures.

Velox EMD: the real fixture (a 3x3x2 stack) with its image dataset replaced by larger frames, stored
as Velox stores stacks -- (rows, columns, frames), one uncompressed chunk per frame -- and its per-frame
metadata column repeated, so everything but the pixels is the instrument's own.
"""

from __future__ import annotations

import shutil
import struct
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

#: DM element type codes of the pixel types written here.
_DM_ELEMENT = {np.dtype("<i2"): 2, np.dtype("<u2"): 4, np.dtype("<f4"): 6, np.dtype("|u1"): 10}
#: DM image DataType codes (ImageData.DataType).
_DM_IMAGE_TYPE = {np.dtype("<i2"): 1, np.dtype("<u2"): 10, np.dtype("<f4"): 2, np.dtype("|u1"): 6}


def _tag_header(kind: int, name: str) -> bytes:
    raw = name.encode("latin-1")
    return struct.pack(">bH", kind, len(raw)) + raw


def _data_tag(name: str, info: list[int], payload: bytes) -> bytes:
    body = b"%%%%" + struct.pack(">Q", len(info)) + b"".join(struct.pack(">Q", i) for i in info) + payload
    return _tag_header(21, name) + struct.pack(">Q", len(body)) + body


def _group(name: str, children: list[bytes]) -> bytes:
    body = struct.pack(">bbQ", 0, 1, len(children)) + b"".join(children)
    return _tag_header(20, name) + struct.pack(">Q", len(body)) + body


def _f32(name: str, value: float) -> bytes:
    return _data_tag(name, [6], struct.pack("<f", value))


def _i32(name: str, value: int) -> bytes:
    return _data_tag(name, [3], struct.pack("<i", value))


def _u32(name: str, value: int) -> bytes:
    return _data_tag(name, [5], struct.pack("<I", value))


def _text(name: str, value: str) -> bytes:
    units = value.encode("utf-16-le")
    return _data_tag(name, [20, 4, len(value)], units)


def _axis(scale: float, units: str) -> bytes:
    return _group("", [_f32("Origin", 0.0), _f32("Scale", scale), _text("Units", units)])


def dm4_bytes(pixels: np.ndarray, pixel_size: float = 1.0, units: str = "", exposure_s: float | None = None,
              name: str = "frame") -> bytes:
    """A DM4 file holding ``pixels`` (2-D image or 3-D stack), calibrated ``pixel_size`` ``units`` per pixel."""
    data = np.ascontiguousarray(pixels, dtype=np.dtype(pixels.dtype).newbyteorder("<"))
    dims = list(data.shape[::-1])  # DM lists x, y, z
    axes = [_axis(pixel_size, units), _axis(pixel_size, units)] + [_axis(1.0, "") for _ in dims[2:]]
    image_tags: list[bytes] = []
    if exposure_s is not None:
        image_tags.append(_group("DataBar", [_f32("Exposure Time (s)", exposure_s)]))
    image = _group("", [
        _group("ImageData", [
            _group("Calibrations", [
                _group("Brightness", [_f32("Origin", 0.0), _f32("Scale", 1.0), _text("Units", "")]),
                _group("Dimension", axes),
            ]),
            _data_tag("Data", [20, _DM_ELEMENT[data.dtype], data.size], data.tobytes()),
            _i32("DataType", _DM_IMAGE_TYPE[data.dtype]),
            _group("Dimensions", [_u32("", d) for d in dims]),
            _i32("PixelDepth", data.dtype.itemsize),
        ]),
        _group("ImageTags", image_tags),
        _text("Name", name),
    ])
    root = struct.pack(">bbQ", 0, 1, 1) + _group("ImageList", [image])
    return struct.pack(">iQi", 4, len(root), 1) + root + b"\x00" * 8


def write_dm4(path: Path, pixels: np.ndarray, **kwargs: object) -> Path:
    """Write `dm4_bytes` to ``path``."""
    path.write_bytes(dm4_bytes(pixels, **kwargs))  # type: ignore[arg-type]
    return path


def velox_stack(template: Path, path: Path, frames: np.ndarray) -> Path:
    """A copy of the Velox EMD ``template`` (one image stack) holding ``frames`` (n, rows, columns)."""
    import h5py

    shutil.copy(template, path)
    path.chmod(0o644)  # the fixture folder is read-only
    with h5py.File(path, "r+") as f:
        (key,) = f["Data/Image"].keys()
        group = f["Data/Image"][key]
        metadata = group["Metadata"][:, 0]
        del group["Data"], group["Metadata"]
        n, rows, cols = frames.shape
        data = group.create_dataset("Data", (rows, cols, n), dtype=frames.dtype, chunks=(rows, cols, 1))
        for i in range(n):
            data[:, :, i] = frames[i]
        group.create_dataset("Metadata", data=np.repeat(metadata[:, None], n, axis=1), chunks=(metadata.size, 1))
    return path
