"""DECTRIS stream interface v1 ("legacy"): multipart messages of JSON headers and binary blobs.

As DECTRIS's SIMPLON documentation describes it, on a ZeroMQ PUSH socket (port 9999):

- **series header**, at arm: part 1 ``{"htype": "dheader-1.0", "series": N, "header_detail": D}``. With
  ``D`` = ``basic`` or ``all`` part 2 is the detector configuration (JSON: ``x_pixel_size``,
  ``frame_time``, ``count_time``, ``x_pixels_in_detector``...). With ``all``, pairs follow:
  ``{"htype": "dflatfield-1.0", "shape": [x, y], "type": "float32"}`` + blob, ``dpixelmask-1.0`` (uint32)
  + blob, ``dcountrate_table-1.0`` + blob. A last JSON part may be the user's ``header_appendix``.
- **image**: ``{"htype": "dimage-1.0", "series": N, "frame": i, "hash": md5}``, ``{"htype":
  "dimage_d-1.0", "shape": [x, y], "type": "uint16", "encoding": "bs16-lz4<", "size": bytes}``, the data
  blob, ``{"htype": "dconfig-1.0", "start_time": ns, "stop_time": ns, "real_time": ns}`` (times since the
  series started), and maybe the ``image_appendix``.
- **series end**: ``{"htype": "dseries_end-1.0", "series": N}``.

Shapes are [x, y] = [columns, rows]; arrays are row-major, so a blob reshapes to (y, x).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from sam4em_live.sources.dectris.compression import Encoding, PayloadError, decode_pixels
from sam4em_live.sources.dectris.messages import (
    PIXEL_TYPES,
    DetectorHeader,
    DetectorImage,
    DetectorMessage,
    DetectorSeriesEnd,
    image_shape,
    optional_float,
    require_int,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

#: JSON parts larger than this are refused unparsed (a detector config is a few kB).
MAX_JSON_BYTES = 1 << 20


def is_v1(first_part: memoryview) -> bool:
    """Whether a message's first part is a v1 JSON header (v2 messages are CBOR maps, never ``{``)."""
    return first_part.nbytes > 0 and first_part[0] == ord("{")


def parse_json(part: memoryview) -> dict[str, Any]:
    """A JSON object part, or `PayloadError` ``bad_json``."""
    if part.nbytes > MAX_JSON_BYTES:
        raise PayloadError("bad_json", f"JSON part of {part.nbytes} bytes")
    try:
        value = json.loads(part.tobytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("bad_json", str(exc)[:80]) from None
    if not isinstance(value, dict):
        raise PayloadError("bad_json", f"a JSON {type(value).__name__}, not an object")
    return value


def decode_v1(parts: Sequence[memoryview]) -> DetectorMessage:
    """One v1 multipart message (parts as flat byte views); raises `PayloadError` for anything malformed."""
    head = parse_json(parts[0])
    htype = head.get("htype")
    if htype == "dimage-1.0":
        return _image(head, parts)
    if htype == "dheader-1.0":
        return _header(head, parts)
    if htype == "dseries_end-1.0":
        return DetectorSeriesEnd(require_int(head.get("series"), "series"))
    raise PayloadError("unknown_htype", f"htype {str(htype)[:40]!r}")


def _image(head: dict[str, Any], parts: Sequence[memoryview]) -> DetectorImage:
    if len(parts) < 3:
        raise PayloadError("part_count", f"image message of {len(parts)} parts (expected 4)")
    detail = parse_json(parts[1])
    if detail.get("htype") != "dimage_d-1.0":
        raise PayloadError("part_count", f"image part 2 is {str(detail.get('htype'))[:40]!r}, not dimage_d-1.0")
    shape_xy = detail.get("shape")
    if not isinstance(shape_xy, list) or len(shape_xy) != 2:
        raise PayloadError("bad_shape", f"shape {str(shape_xy)[:40]} is not [x, y]")
    shape = image_shape(shape_xy[0], shape_xy[1])
    dtype = PIXEL_TYPES.get(detail.get("type"))  # type: ignore[arg-type]
    if dtype is None:
        raise PayloadError("unsupported_dtype", f"type {str(detail.get('type'))[:20]!r}")
    pixels = decode_pixels(parts[2], _v1_encoding(detail.get("encoding")), dtype, shape)
    start_time_s = None
    if len(parts) >= 4 and parts[3].nbytes and parts[3][0] == ord("{"):
        config = parse_json(parts[3])
        if config.get("htype") == "dconfig-1.0":
            start_ns = config.get("start_time")
            if isinstance(start_ns, (int, float)) and not isinstance(start_ns, bool) and start_ns >= 0:
                start_time_s = float(start_ns) * 1e-9
    return DetectorImage(require_int(head.get("series"), "series"), require_int(head.get("frame"), "frame"),
                         pixels, start_time_s)


def _v1_encoding(name: object) -> Encoding:
    if isinstance(name, str) and len(name) <= 16:
        return _v1_encoding_cached(name)
    return Encoding.from_v1(name)


@functools.lru_cache(maxsize=16)
def _v1_encoding_cached(name: str) -> Encoding:
    return Encoding.from_v1(name)


def _header(head: dict[str, Any], parts: Sequence[memoryview]) -> DetectorHeader:
    series = require_int(head.get("series"), "series")
    detail = head.get("header_detail", "basic")
    if detail not in ("all", "basic", "none"):
        raise PayloadError("bad_field", f"header_detail {str(detail)[:20]!r}")
    config: dict[str, Any] = parse_json(parts[1]) if detail != "none" and len(parts) > 1 else {}
    blobs: dict[str, np.ndarray] = {}
    i = 2 if detail != "none" else 1
    appendix: dict[str, Any] = {}
    while i < len(parts):
        meta = parse_json(parts[i])
        htype = meta.get("htype")
        if htype in ("dflatfield-1.0", "dpixelmask-1.0", "dcountrate_table-1.0") and i + 1 < len(parts):
            blobs[str(htype)] = _blob(meta, parts[i + 1])
            i += 2
        else:  # the user's header_appendix (any JSON); kept for its pixel_size_nm
            appendix = meta
            i += 1
    shape = None
    if "x_pixels_in_detector" in config and "y_pixels_in_detector" in config:
        shape = image_shape(config["x_pixels_in_detector"], config["y_pixels_in_detector"])
    mask = blobs.get("dpixelmask-1.0")
    nimages, ntrigger = config.get("nimages"), config.get("ntrigger")
    n_images = nimages * max(1, ntrigger) if isinstance(nimages, int) and isinstance(ntrigger, int) else None
    return DetectorHeader(
        series_number=series, header_detail=str(detail), shape=shape,
        x_pixel_size_m=optional_float(config.get("x_pixel_size")),
        y_pixel_size_m=optional_float(config.get("y_pixel_size")),
        frame_time_s=optional_float(config.get("frame_time")),
        count_time_s=optional_float(config.get("count_time")), n_images=n_images,
        pixel_mask=None if mask is None else mask != 0, flatfield=blobs.get("dflatfield-1.0"),
        pixel_mask_applied=bool(config.get("pixel_mask_applied", False)),
        flatfield_applied=bool(config.get("flatfield_correction_applied", False)),
        appendix=appendix, description=config.get("description") if isinstance(config.get("description"), str)
        else None)


def _blob(meta: dict[str, Any], blob: memoryview) -> np.ndarray:
    shape_xy = meta.get("shape")
    if not isinstance(shape_xy, list) or len(shape_xy) != 2:
        raise PayloadError("bad_shape", f"{meta.get('htype')} shape {str(shape_xy)[:40]}")
    dtype = PIXEL_TYPES.get(meta.get("type"))  # type: ignore[arg-type]
    if dtype is None:
        raise PayloadError("unsupported_dtype", f"{meta.get('htype')} type {str(meta.get('type'))[:20]!r}")
    return decode_pixels(blob, Encoding("raw"), dtype, image_shape(shape_xy[0], shape_xy[1])).copy()
