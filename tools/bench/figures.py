"""Helpers that turn samples into metrics, and outputs into fingerprints (shared by the benchmarks)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from tools.bench.schema import Better, Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence


def distribution(prefix: str, samples: Sequence[float], unit: str, better: Better = "lower",
                 percentiles: Iterable[int] = (50, 90, 99)) -> dict[str, Metric]:
    """``prefix_mean``, ``prefix_p50``..., ``prefix_max`` of ``samples`` (NaN when there are none)."""
    values = np.asarray(samples, dtype=float)
    if values.size == 0:
        values = np.asarray([np.nan])
    out = {f"{prefix}_mean": Metric(float(np.mean(values)), unit, better)}
    out.update({f"{prefix}_p{p}": Metric(float(np.percentile(values, p)), unit, better) for p in percentiles})
    out[f"{prefix}_max"] = Metric(float(np.max(values)), unit, better)
    return out


def count(value: float, unit: str = "count", better: Better = "none") -> Metric:
    return Metric(float(value), unit, better)


class MaskDigest:
    """A running SHA-256 over particle masks (id, presence, box, pixels): equal digests, identical masks."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, masks: Iterable[object]) -> None:
        for mask in masks:
            particle, present = getattr(mask, "particle"), getattr(mask, "present")  # noqa: B009
            self._hash.update(f"{particle}:{bool(present)}".encode())
            crop = getattr(mask, "crop", None)
            if present and crop is not None:
                self._hash.update(repr(tuple(getattr(mask, "bbox"))).encode())  # noqa: B009
                self._hash.update(np.packbits(np.asarray(crop, dtype=bool)).tobytes())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def text(params: Mapping[str, ParamValue], name: str) -> str:
    return str(params[name])


def integer(params: Mapping[str, ParamValue], name: str) -> int:
    value = params[name]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"parameter {name} must be a number, got {value!r}")
    return int(value)


def number(params: Mapping[str, ParamValue], name: str) -> float:
    value = params[name]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"parameter {name} must be a number, got {value!r}")
    return float(value)


def mapping(params: Mapping[str, ParamValue], name: str) -> dict[str, ParamValue]:
    value = params[name]
    if not isinstance(value, dict):
        raise TypeError(f"parameter {name} must be a JSON object, got {value!r}")
    return dict(value)


def strings(params: Mapping[str, ParamValue], name: str) -> list[str]:
    value = params[name]
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise TypeError(f"parameter {name} must be a list, got {value!r}")
    return [str(v) for v in value]
