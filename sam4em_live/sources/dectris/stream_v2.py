"""DECTRIS stream interface v2: one CBOR map per message, ``type`` = ``start`` / ``image`` / ``end``.

As DECTRIS documents it (github.com/dectris/documentation, stream_v2 and cbor/dectris-compression-tag),
on a ZeroMQ PUSH socket (port 31001):

- images are multi-dimensional arrays, CBOR tag 40 ``[[rows, columns], typed array]`` (RFC 8746,
  row-major), the typed array a tag 64..87 over a byte string (tag 69 = uint16 little-endian...);
- any byte string may be the DECTRIS compression tag 56500 ``["bslz4", element size, bytes]`` or
  ``["lz4", 0, bytes]`` (HDF5 framings);
- ``start`` carries ``image_size_x/y``, ``pixel_size_x/y`` (m), ``frame_time`` / ``count_time`` (s),
  ``number_of_images``, ``channels``, and with ``header_detail = all`` the ``pixel_mask`` and ``flatfield``
  maps (channel -> array) and their ``*_enabled`` flags; ``image`` carries ``series_id``, ``image_id``,
  ``start_time`` (a rational [numerator, denominator] of seconds since ``series_date``) and ``data``
  (channel -> array); ``end`` carries ``series_id``.

The arrays are decoded lazily: the tag hook only records (dtype, encoding, payload); the pixels are
decompressed once, by `compression.decode_pixels`, straight into the image's dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np
from cbor2 import CBORTag

from sam4em_live.sources.dectris.compression import Encoding, PayloadError, decode_pixels
from sam4em_live.sources.dectris.messages import (
    DetectorHeader,
    DetectorImage,
    DetectorMessage,
    DetectorSeriesEnd,
    image_shape,
    optional_float,
    require_int,
)

TAG_MULTI_DIM_ROW_MAJOR = 40
TAG_DECTRIS_COMPRESSION = 56500
TAG_SELF_DESCRIBED = 55799
#: RFC 8746 typed-array tags -> numpy dtype strings (little- and big-endian integers and floats).
TYPED_ARRAY_TAGS: dict[int, str] = {
    64: "|u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "|u1", 69: "<u2", 70: "<u4", 71: "<u8",
    72: "|i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
    81: ">f4", 82: ">f8", 85: "<f4", 86: "<f8",
}
_DTYPE_TAGS = {np.dtype(v).str: k for k, v in reversed(TYPED_ARRAY_TAGS.items())}


@dataclass(frozen=True, slots=True)
class Compressed:
    """A tag-56500 byte string, still compressed."""

    encoding: Encoding
    payload: bytes


@dataclass(frozen=True, slots=True)
class TypedArray:
    """An RFC 8746 typed array, not yet decoded."""

    dtype: np.dtype
    payload: bytes | Compressed


@dataclass(frozen=True, slots=True)
class MultiDimArray:
    """An RFC 8746 multi-dimensional array (row-major): ``dims`` and its typed array."""

    dims: tuple[int, ...]
    array: TypedArray

    def decode(self) -> np.ndarray:
        """The 2-D pixels (rows, columns), decompressed; `PayloadError` when they do not fit ``dims``."""
        if len(self.dims) != 2:
            raise PayloadError("bad_shape", f"array of {len(self.dims)} dimensions")
        shape = image_shape(self.dims[1], self.dims[0])
        payload = self.array.payload
        encoding = payload.encoding if isinstance(payload, Compressed) else Encoding("raw")
        data = payload.payload if isinstance(payload, Compressed) else payload
        dtype = self.array.dtype
        pixels = decode_pixels(data, encoding, dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype,
                               shape)
        return pixels.byteswap().view(dtype.newbyteorder("<")) if dtype.byteorder == ">" else pixels


def _tag_hook(first: Any, second: Any) -> object:
    # cbor2 >= 6 calls tag_hook(tag, immutable), cbor2 5 tag_hook(decoder, tag); tag contents come as
    # tuples and frozendicts with cbor2 6.
    tag = first if isinstance(first, CBORTag) else second
    value = list(tag.value) if isinstance(tag.value, tuple) else tag.value
    if tag.tag == TAG_DECTRIS_COMPRESSION:
        if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], bytes)):
            raise PayloadError("bad_compression_tag", "tag 56500 is not [algorithm, modifier, bytes]")
        return Compressed(_v2_encoding(value[0], value[1]), value[2])
    if tag.tag in TYPED_ARRAY_TAGS:
        if not isinstance(value, (bytes, Compressed)):
            raise PayloadError("bad_typed_array", f"typed array tag {tag.tag} over {type(value).__name__}")
        return TypedArray(np.dtype(TYPED_ARRAY_TAGS[tag.tag]), value)
    if tag.tag == TAG_MULTI_DIM_ROW_MAJOR:
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (list, tuple))
                and all(isinstance(d, int) and not isinstance(d, bool) for d in value[0])
                and isinstance(value[1], TypedArray)):
            raise PayloadError("bad_typed_array", "tag 40 is not [[dims], typed array]")
        return MultiDimArray(tuple(value[0]), value[1])
    if tag.tag == TAG_SELF_DESCRIBED:
        return value
    return tag  # unknown tags stay tags (user_data may hold anything)


@functools.lru_cache(maxsize=16)
def _v2_encoding(algorithm: object, modifier: object) -> Encoding:
    return Encoding.from_v2(algorithm, modifier)


def decode_v2(message: bytes | memoryview, channel: str | None = None) -> DetectorMessage:
    """One v2 message; ``channel`` picks the image channel (None: the first one). `PayloadError` if malformed."""
    try:
        value = cbor2.loads(message, tag_hook=_tag_hook)
    except PayloadError:
        raise
    except Exception as exc:  # cbor2 raises CBORDecodeError and others on garbage
        raise PayloadError("bad_cbor", f"{type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(value, Mapping):
        raise PayloadError("bad_cbor", f"a CBOR {type(value).__name__}, not a map")
    kind = value.get("type")
    unique = value.get("series_unique_id")
    unique_id = unique if isinstance(unique, str) else None
    if kind == "image":
        return _image(value, channel, unique_id)
    if kind == "start":
        return _start(value, channel, unique_id)
    if kind == "end":
        return DetectorSeriesEnd(require_int(value.get("series_id"), "series_id"), unique_id)
    raise PayloadError("unknown_type", f"message type {str(kind)[:40]!r}")


def _pick(channels: object, channel: str | None, what: str) -> Any:
    if not isinstance(channels, Mapping) or not channels:
        raise PayloadError("bad_field", f"{what} is not a map of channels")
    if channel is None:
        return next(iter(channels.values()))
    if channel not in channels:
        raise PayloadError("unknown_channel", f"{what} has no channel {channel!r} (has {list(channels)[:4]})")
    return channels[channel]


def _rational_s(value: object) -> float | None:
    if (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)
            and value[1] > 0):
        return value[0] / value[1]
    return None


def _image(value: Mapping[str, Any], channel: str | None, unique_id: str | None) -> DetectorImage:
    array = _pick(value.get("data"), channel, "data")
    if not isinstance(array, MultiDimArray):
        raise PayloadError("bad_typed_array", "image data is not a tag-40 array")
    return DetectorImage(require_int(value.get("series_id"), "series_id"),
                         require_int(value.get("image_id"), "image_id"), array.decode(),
                         _rational_s(value.get("start_time")), unique_id)


def _start(value: Mapping[str, Any], channel: str | None, unique_id: str | None) -> DetectorHeader:
    shape = None
    if "image_size_x" in value and "image_size_y" in value:
        shape = image_shape(value["image_size_x"], value["image_size_y"])
    mask = flatfield = None
    if isinstance(value.get("pixel_mask"), Mapping) and value["pixel_mask"]:
        mask = _pick(value["pixel_mask"], channel, "pixel_mask")
    if isinstance(value.get("flatfield"), Mapping) and value["flatfield"]:
        flatfield = _pick(value["flatfield"], channel, "flatfield")
    n_images = value.get("number_of_images")
    user_data = value.get("user_data")
    return DetectorHeader(
        series_number=require_int(value.get("series_id"), "series_id"),
        header_detail="all" if mask is not None or flatfield is not None else "basic",
        series_unique_id=unique_id, shape=shape,
        x_pixel_size_m=optional_float(value.get("pixel_size_x")),
        y_pixel_size_m=optional_float(value.get("pixel_size_y")),
        frame_time_s=optional_float(value.get("frame_time")), count_time_s=optional_float(value.get("count_time")),
        n_images=n_images if isinstance(n_images, int) and not isinstance(n_images, bool) else None,
        pixel_mask=mask.decode() != 0 if isinstance(mask, MultiDimArray) else None,
        flatfield=flatfield.decode().copy() if isinstance(flatfield, MultiDimArray) else None,
        pixel_mask_applied=bool(value.get("pixel_mask_enabled", False)),
        flatfield_applied=bool(value.get("flatfield_enabled", False)),
        appendix=dict(user_data) if isinstance(user_data, Mapping) else {},
        description=value.get("detector_description") if isinstance(value.get("detector_description"), str)
        else None)


# ---------------------------------------------------------------- encoding (the stand-in publisher, tests)


def typed_array_tag(dtype: np.dtype) -> int:
    """The RFC 8746 tag of a typed array of ``dtype``."""
    return _DTYPE_TAGS[np.dtype(dtype).str]
