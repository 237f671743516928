"""One result record for every benchmark, and its JSON form.

A result file holds a JSON list of `BenchResult` records (one per benchmark run); a stored baseline is
such a file with one record. The schema is versioned (`SCHEMA_VERSION`); a reader refuses another
version instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

SCHEMA_VERSION = 1

#: JSON scalars and containers allowed as benchmark parameters.
ParamValue = str | int | float | bool | None | list["ParamValue"] | dict[str, "ParamValue"]
Better = Literal["lower", "higher", "none"]


@dataclass(frozen=True)
class Metric:
    """One measured figure. ``better`` says which way is an improvement (``none``: neither, e.g. a count)."""

    value: float
    unit: str
    better: Better = "lower"

    def to_json(self) -> dict[str, object]:
        return {"value": self.value, "unit": self.unit, "better": self.better}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Metric:
        better = str(data.get("better", "lower"))
        if better not in ("lower", "higher", "none"):
            raise ValueError(f"metric 'better' must be lower, higher or none, got {better!r}")
        value = data["value"]
        return cls(float("nan") if value is None else float(cast("float", value)), str(data["unit"]),
                   cast("Better", better))


@dataclass(frozen=True)
class Machine:
    """Where a result was measured (timings from different machines do not compare)."""

    platform: str
    cpu: str
    cpus: int
    python: str
    numpy: str
    load_avg_1min_start: float
    load_avg_1min_end: float

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Machine:
        return cls(str(data["platform"]), str(data["cpu"]), int(cast("int", data["cpus"])), str(data["python"]),
                   str(data["numpy"]), float(cast("float", data["load_avg_1min_start"])),
                   float(cast("float", data["load_avg_1min_end"])))


@dataclass(frozen=True)
class BenchResult:
    """One run of one benchmark.

    ``revision`` is the commit of the measured package (``+dirty`` when the working tree differed from it);
    ``fingerprints`` are digests of outputs that must not change with a speed-up (e.g. the masks), compared
    for equality; ``timestamp`` is UTC, ISO 8601; ``wall_s`` is how long the whole run took.
    """

    benchmark: str
    params: Mapping[str, ParamValue]
    revision: str
    machine: Machine
    metrics: Mapping[str, Metric]
    timestamp: str
    wall_s: float
    fingerprints: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "schema": SCHEMA_VERSION, "benchmark": self.benchmark, "params": dict(self.params),
            "revision": self.revision, "machine": self.machine.to_json(), "timestamp": self.timestamp,
            "wall_s": round(self.wall_s, 3), "metrics": {k: m.to_json() for k, m in self.metrics.items()},
            "fingerprints": dict(self.fingerprints),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BenchResult:
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"result schema {data.get('schema')!r} is not {SCHEMA_VERSION}")
        metrics = cast("Mapping[str, Mapping[str, object]]", data["metrics"])
        return cls(
            benchmark=str(data["benchmark"]), params=cast("Mapping[str, ParamValue]", data["params"]),
            revision=str(data["revision"]), machine=Machine.from_json(cast("Mapping[str, object]", data["machine"])),
            metrics={name: Metric.from_json(m) for name, m in metrics.items()}, timestamp=str(data["timestamp"]),
            wall_s=float(cast("float", data["wall_s"])),
            fingerprints={str(k): str(v) for k, v in cast("Mapping[str, object]", data.get("fingerprints", {})).items()},
        )


def save_results(path: Path, results: Sequence[BenchResult]) -> None:
    """Write ``results`` as a JSON list (NaN written as null: strict JSON readers accept the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([_nan_to_none(r.to_json()) for r in results], indent=1) + "\n")


def load_results(path: Path) -> list[BenchResult]:
    """The records of a result file (a JSON list, or one record)."""
    data = json.loads(path.read_text())
    records = data if isinstance(data, list) else [data]
    return [BenchResult.from_json(record) for record in records]


def _nan_to_none(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value
