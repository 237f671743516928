"""Results schema v1: what the service publishes (see docs/results.md).

Every message is multipart ``[topic, msgpack map]`` with an optional third
part (the preview pixels). Topics: ``result``, ``status``, ``event``,
``preview``. Masks travel as a bbox plus a row-major run-length encoding of
the crop, starting with a run of background (so ``counts[0]`` may be 0).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from sam4em_live.wire import RejectedMessage, unpack_header

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.particles import ParticleMask, ParticleMeasurement
    from sam4em_live.results import FrameResult, ParticleStatistics, ServiceEvent

SCHEMA_ID = "sam4em-live.results"
SCHEMA_VERSION = 1
TOPIC_RESULT = b"result"
TOPIC_STATUS = b"status"
TOPIC_EVENT = b"event"
TOPIC_PREVIEW = b"preview"
TOPICS = (TOPIC_RESULT, TOPIC_STATUS, TOPIC_EVENT, TOPIC_PREVIEW)
RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS: these masks are NOT segmentation (untrained model, for tests/benchmarks only)"


def rle_encode(crop: np.ndarray) -> list[int]:
    """Row-major run lengths of a boolean array, starting with background."""
    flat = np.ascontiguousarray(crop, dtype=bool).ravel()
    if flat.size == 0:
        return []
    # Run ends: every index whose successor differs, framed by -1 and the last index. Filled in place
    # (no concatenate/diff wrappers) because this runs for every particle of every published frame.
    change = (flat[1:] != flat[:-1]).nonzero()[0]
    ends = np.empty(change.size + 2, dtype=np.intp)
    ends[0] = -1
    ends[1:-1] = change
    ends[-1] = flat.size - 1
    runs = (ends[1:] - ends[:-1]).tolist()
    return [0, *runs] if flat[0] else runs


#: Crop pixels run-length encoded in one pass: the pass's temporaries (two boolean arrays of this many bytes)
#: stay well under malloc's 128 KiB, above which they are fresh, page-faulted memory on every frame.
_RLE_PASS_PIXELS = 32_000


def rle_encode_many(crops: Sequence[np.ndarray]) -> list[list[int]]:
    """`rle_encode` of each crop, in passes over several of them laid end to end (a frame's masks; issue 23).

    Every crop's last pixel ends a run, so runs never join across crops; each crop's runs are then the
    differences of consecutive run ends, as in `rle_encode` (integers: the same lists).
    """
    if len(crops) < 8:  # the pass's fixed cost is more than it saves (4 discs: 1.2x, 16: 0.6x, 50: 0.5x)
        return [rle_encode(crop) for crop in crops]
    flats = [np.ascontiguousarray(crop, dtype=bool).ravel() for crop in crops]
    out: list[list[int]] = []
    start = pixels = 0
    for stop, flat in enumerate(flats):
        if pixels + flat.size > _RLE_PASS_PIXELS and stop > start:
            out.extend(_rle_pass(flats[start:stop]))
            start, pixels = stop, 0
        pixels += flat.size
    out.extend(_rle_pass(flats[start:]))
    return out


def _rle_pass(flats: list[np.ndarray]) -> list[list[int]]:
    """`rle_encode` of each flattened crop, all in one pass."""
    sizes = np.array([flat.size for flat in flats], dtype=np.intp)
    if not sizes.any():
        return [[] for _ in flats]
    every = np.concatenate(flats)
    last = np.cumsum(sizes) - 1
    ends_run = np.empty(every.size, dtype=bool)
    np.not_equal(every[1:], every[:-1], out=ends_run[:-1])
    ends_run[last[sizes > 0]] = True
    ends = ends_run.nonzero()[0]
    runs = np.empty_like(ends)
    runs[0] = ends[0] + 1
    runs[1:] = ends[1:] - ends[:-1]
    cut = np.searchsorted(ends, last, side="right").tolist()
    counts = runs.tolist()
    out: list[list[int]] = []
    start = 0
    for flat, stop in zip(flats, cut, strict=True):
        if flat.size == 0:
            out.append([])
            continue
        out.append([0, *counts[start:stop]] if flat[0] else counts[start:stop])
        start = stop
    return out


def rle_decode(counts: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of `rle_encode`; raises ValueError if the counts do not fill ``shape``."""
    total = shape[0] * shape[1]
    if sum(counts) != total or any(c < 0 for c in counts):
        raise ValueError(f"RLE counts sum {sum(counts)} != {total}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(shape)


def _num(value: float) -> float | None:
    if type(value) is float:  # the usual case, five times per particle per frame
        return value if value == value else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def particle_entry(m: ParticleMeasurement, mask: ParticleMask, include_mask: bool,
                   mask_rle: list[int] | None = None) -> dict[str, Any]:
    """One particle of a results message (measurement, score and, if asked, the RLE mask).

    ``mask_rle``: the crop's `rle_encode` when the caller has it already (`rle_encode_many`).
    """
    entry: dict[str, Any] = {
        "id": m.particle, "present": m.present, "score": float(m.score),
        "x": _num(m.x), "y": _num(m.y), "angle_deg": _num(m.angle_deg), "area_px": m.area_px,
        "major_axis_px": _num(m.major_axis_px), "minor_axis_px": _num(m.minor_axis_px), "split": m.split,
    }
    if mask.predicted_iou is not None:
        entry["predicted_iou"] = float(mask.predicted_iou)
    if mask.object_score_logit is not None:
        entry["object_score_logit"] = float(mask.object_score_logit)
    if mask.present and mask.bbox is not None:
        entry["bbox"] = list(mask.bbox)
        if include_mask and mask.crop is not None:
            entry["mask_rle"] = rle_encode(mask.crop) if mask_rle is None else mask_rle
    return entry


def statistics_entry(stats: ParticleStatistics) -> dict[str, Any]:
    """A particle's ``stats`` entry: the record's fields as keys, in the schema's order (docs/results.md).

    Written out field by field (not ``dataclasses.asdict``, which deep-copies) so the
    message keeps its key order and the record can grow without changing the schema.
    """
    return {
        "lag_frames": list(stats.lag_frames),
        "lag_s": None if stats.lag_s is None else list(stats.lag_s),
        "msd_px2": list(stats.msd_px2),
        "msd_nm2": None if stats.msd_nm2 is None else list(stats.msd_nm2),
        "n": list(stats.n),
        "D_px2_per_frame": stats.D_px2_per_frame,
        "D_err": stats.D_err,
        "alpha": stats.alpha,
        "alpha_err": stats.alpha_err,
        "offset_px2": stats.offset_px2,
        "D_linear_px2_per_frame": stats.D_linear_px2_per_frame,
        "D_linear_err": stats.D_linear_err,
        "fit_lags": stats.fit_lags,
        "window_frames": stats.window_frames,
        "frames_seen": stats.frames_seen,
        "frames_in_window": stats.frames_in_window,
        "D_nm2_per_s": stats.D_nm2_per_s,
        "D_nm2_per_s_err": stats.D_nm2_per_s_err,
    }


def event_entry(event: ServiceEvent) -> dict[str, Any]:
    """One event of a results message."""
    return {"kind": event.kind, "frame": event.frame, "particle": event.particle, "detail": dict(event.detail)}


def result_message(result: FrameResult, run_id: str, backend: dict[str, Any], include_masks: bool) -> dict[str, Any]:
    """The whole results message body of one frame (docs/results.md)."""
    frame = result.frame
    rles: list[list[int] | None] = [None] * len(result.masks)
    if include_masks:  # all of the frame's masks encoded in one pass
        encoded = [(i, k.crop) for i, k in enumerate(result.masks)
                   if k.present and k.bbox is not None and k.crop is not None]
        for (i, _), rle in zip(encoded, rle_encode_many([crop for _, crop in encoded]), strict=True):
            rles[i] = rle
    msg: dict[str, Any] = {
        "schema": SCHEMA_ID, "version": SCHEMA_VERSION, "type": "result",
        "run_id": run_id, "series_id": frame.series_id, "frame": frame.index,
        "timestamp_s": frame.timestamp_s, "processed_s": result.processed_s,
        "shape": list(frame.shape), "calibration": frame.calibration.as_dict(),
        "backend": backend.get("backend"), "random_weights": bool(backend.get("random_weights", False)),
        "particles": [particle_entry(m, k, include_masks, rle)
                      for m, k, rle in zip(result.measurements, result.masks, rles, strict=False)],
        "stats": {str(pid): statistics_entry(s) for pid, s in result.stats.items()},
        "events": [event_entry(e) for e in result.events],
        "timings_ms": dict(result.timings_ms),
    }
    if msg["random_weights"]:
        msg["WARNING"] = RANDOM_WEIGHTS_WARNING
    return msg


def pack(topic: bytes, body: dict[str, Any]) -> list[bytes]:
    """The multipart message: topic, then the msgpack body stamped with the schema id."""
    body.setdefault("schema", SCHEMA_ID)
    body.setdefault("version", SCHEMA_VERSION)
    return [topic, msgpack.packb(body, use_bin_type=True)]


def decode_message(parts: Sequence[Any], max_bytes: int = 64 * 1024 * 1024) -> tuple[bytes, dict[str, Any], Any]:
    """Validate and unpack a published message: ``(topic, body, payload or None)``.

    Raises `RejectedMessage` for anything that is not schema v1.
    """
    if len(parts) not in (2, 3):
        raise RejectedMessage("part_count", f"{len(parts)} parts")
    topic = bytes(parts[0].buffer if hasattr(parts[0], "buffer") else parts[0])
    if topic not in TOPICS:
        raise RejectedMessage("bad_topic", repr(topic[:32]))
    body = unpack_header(parts[1].buffer if hasattr(parts[1], "buffer") else parts[1], max_bytes)
    if body.get("schema") != SCHEMA_ID or body.get("version") != SCHEMA_VERSION:
        raise RejectedMessage("unknown_version", f"{body.get('schema')!r} v{body.get('version')!r}")
    payload = parts[2] if len(parts) == 3 else None
    return topic, body, payload


def preview_pixels(body: dict[str, Any], payload: Any) -> np.ndarray:
    """Decode the pixels of a preview message (shape/dtype from its body)."""
    buffer = payload.buffer if hasattr(payload, "buffer") else payload
    shape = tuple(body["preview_shape"])
    return np.frombuffer(buffer, dtype=np.dtype(body["preview_dtype"])).reshape(shape)
